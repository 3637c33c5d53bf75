"""Drop to user nobody first, then ``sitebus run`` the arguments given (to bind port 81).

Everything the command needs is imported before the drop: this Python lives
under /root, which nobody cannot read.
"""

from __future__ import annotations

import argparse  # noqa: F401  # imported while still root, see above
import encodings.idna  # noqa: F401  # getaddrinfo needs it; imported while still root
import gettext  # noqa: F401  # imported while still root, see above
import locale  # noqa: F401  # imported while still root, see above
import os
import pwd
import sys

import hello_app  # noqa: F401  # imported while still root, see above

import sitebus.plugins.signals  # imported while still root, see above
import sitebus.servers.wsgiref  # imported while still root, see above
import sitebus.site.run  # noqa: F401  # imported while still root, see above
from sitebus.cli import main

if __name__ == "__main__":
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    sys.exit(main(["run", *sys.argv[1:]]))
