import sys

from ec2net.cli import main

sys.exit(main())
