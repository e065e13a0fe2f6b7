"""User mechanisms: loading a ``DPMechanism`` file unchanged and reading its declarations.

:mod:`dpaudit.mechanism.loader` turns a spec ``PATH.py[:ClassName]`` into a class
(``load_mechanism_class``), builds instances for a run (``construct``,
``MechanismFactory``) and reads the per-step claims the accountant needs
(``declared_sigma``, ``declared_sensitivity``). Every failure is an
:class:`~dpaudit.errors.InputError` whose one line names the file and the cause.
"""
