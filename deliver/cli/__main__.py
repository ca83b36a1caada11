import sys

from deliver.cli import main

sys.exit(main())
