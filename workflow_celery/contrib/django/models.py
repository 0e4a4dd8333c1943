"""The runs as Django sees them, for the admin: a read-only model over the store's own table.

The table is the store's (``workflow_records``), created and changed by the
store's migrations, which ``manage.py migrate`` runs; the model is unmanaged,
so Django never alters it. Runs change only through the workflow's calls
(``pause``, ``resume``, ``cancel``...), never by saving this model.
"""

from __future__ import annotations

from django.db import models

from ...core.run_state import RunState

RUN_STATE_CHOICES = [(state.value, state.name) for state in RunState]


class Run(models.Model):
    """One run of a workflow (a row of ``workflow_records``)."""

    run_id = models.CharField(max_length=64, primary_key=True)
    workflow_name = models.TextField("workflow")
    foreign_id = models.TextField()
    run_state = models.IntegerField(choices=RUN_STATE_CHOICES)
    status = models.IntegerField()
    object = models.TextField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    version = models.IntegerField()
    run_state_reason = models.TextField()
    status_description = models.TextField()
    trace_origin = models.TextField()

    class Meta:
        managed = False
        db_table = "workflow_records"
        ordering = ["-created_at"]
        verbose_name = "run"
        # Pause, resume and cancel runs in the admin (the workflow's calls); nothing adds or deletes them there.
        default_permissions = ("view", "change")

    def __str__(self) -> str:
        return f"{self.workflow_name} {self.foreign_id} ({self.run_id})"
