"""`python -m hvdlm.audit`: the command; its code is in command.py beside this file."""
import sys

from hvdlm.audit.command import main

if __name__ == "__main__":
    sys.exit(main())
