import sys

from unit_cli.main import main

sys.exit(main())
