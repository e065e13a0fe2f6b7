import sys

from dpaudit.cli.main import main

sys.exit(main())
