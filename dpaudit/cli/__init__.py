"""The ``dpaudit`` command line."""
