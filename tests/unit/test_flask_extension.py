"""WorkflowCelery, the Flask extension: configuration and what it refuses (its joined writes: acceptance)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from workflow_celery import ConfigurationError
from workflow_celery.contrib.flask import WorkflowCelery


def make_app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    return app


def test_init_app_registers_the_extension_and_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_CELERY_APP", "tests.unit.flaskapp_workflows")
    app = make_app()
    ext = WorkflowCelery(app)
    assert app.extensions["workflow_celery"] is ext
    assert app.config["WORKFLOW_CELERY_APP"] == "tests.unit.flaskapp_workflows"
    assert "workflow" in app.cli.commands
    with app.app_context():
        assert list(ext.workflows()) == ["chain"]


def test_the_app_module_must_be_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKFLOW_CELERY_APP", raising=False)
    app = make_app()
    ext = WorkflowCelery(app)
    with app.app_context(), pytest.raises(ConfigurationError, match="WORKFLOW_CELERY_APP"):
        ext.workflows()
    result = app.test_cli_runner().invoke(args=["workflow", "runs", "list"])
    assert result.exit_code == 1 and "flask workflow: error: set app.config['WORKFLOW_CELERY_APP']" in result.output


def test_joined_needs_a_session_and_a_store_on_its_database() -> None:
    app = make_app(WORKFLOW_CELERY_APP="tests.unit.flaskapp_workflows")
    ext = WorkflowCelery(app)
    with app.app_context():
        with pytest.raises(ConfigurationError, match="needs a session"), ext.joined():
            pass
        engine = create_engine("sqlite://")
        with (
            Session(engine) as session,
            pytest.raises(ConfigurationError, match="no workflow of the app stores its runs"),
            ext.joined(session),
        ):
            pass


def test_flask_workflow_runs_the_cli_on_the_configured_module() -> None:
    app = make_app(WORKFLOW_CELERY_APP="tests.unit.flaskapp_workflows")
    WorkflowCelery(app)
    result = app.test_cli_runner().invoke(args=["workflow", "runs", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert '"runs": []' in result.output
