"""Errors of the ingestion package."""

from __future__ import annotations


class IngestError(ValueError):
    """Bad input or bad options: the message names the file (or option) and the problem.

    Raised for problems that stop a whole run (unreadable archive, unknown attribute, hostile
    archive, missing folder). Problems with one image never raise: that image is rejected and
    listed in ``report.json`` instead.
    """
