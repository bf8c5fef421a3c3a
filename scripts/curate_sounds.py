"""Rebuild the packaged sound bank (asgf_nav/sounds/data) from Debian sound packages and local synthesis."""

from asgf_nav.sounds.curate import main

if __name__ == "__main__":
    main()
