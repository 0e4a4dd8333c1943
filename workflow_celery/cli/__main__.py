"""``python -m workflow_celery.cli``: the ``workflow-celery`` command."""

import sys

from . import main

sys.exit(main())
