"""`python -m hvdlm.explain`: the command; its code is in command.py beside this file."""
import sys

from hvdlm.explain.command import main

if __name__ == "__main__":
    sys.exit(main())
