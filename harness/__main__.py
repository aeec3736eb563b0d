import sys

from onceproof.cli import main

sys.exit(main())
