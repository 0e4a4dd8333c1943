#!/usr/bin/env python
"""The standard Django layout, as ``django-admin startproject`` makes it, with Celery in ``proj/celery.py``."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
