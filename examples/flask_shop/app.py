"""A Flask shop on Flask-SQLAlchemy: an order row and its run committed together.

    flask --app examples.flask_shop.app run                       # the web app
    celery -A examples.orders worker -Q 'order-processing.*'       # the workers
    flask --app examples.flask_shop.app workflow runs list         # the operator's command

``POST /orders`` (JSON ``{"id": ..., "items": [...], "total": ...}``) inserts
the order and triggers its run in ``db.session``'s transaction: a failure
after the trigger rolls both back and no message is ever published.
``GET /orders/<id>`` shows the order with its run's status, ``POST
/orders/<id>/cancel`` cancels the run. The database and the broker come from
``celeryconfig`` (``WORKFLOW_CELERY_DATABASE_URL``, ``CELERY_BROKER_URL``);
the workflow, its Celery app and its store are those of ``examples.orders``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import celeryconfig
from examples.orders import Order, wf
from workflow_celery import InvalidRunStateTransition, RecordNotFound, WorkflowInProgress
from workflow_celery.contrib.flask import WorkflowCelery


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
workflows = WorkflowCelery(db=db)


class ShopOrder(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "shop_orders"

    id: Mapped[str] = mapped_column(primary_key=True)
    customer: Mapped[str]
    run_id: Mapped[str | None]
    cancelled: Mapped[bool] = mapped_column(default=False)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = celeryconfig.workflow_database_url
    app.config["WORKFLOW_CELERY_APP"] = "examples.orders"
    app.config.update(config or {})
    db.init_app(app)
    workflows.init_app(app)
    with app.app_context():
        db.create_all()

    @app.post("/orders")
    def place_order() -> Any:
        data = request.get_json(force=True)
        if db.session.get(ShopOrder, str(data["id"])) is not None:
            return jsonify(error="this order exists already"), 409
        order = ShopOrder(id=str(data["id"]), customer=str(data.get("customer", "")))
        db.session.add(order)
        with workflows.joined():
            try:
                order.run_id = wf.trigger(
                    order.id, initial_value=Order(id=order.id, items=list(data["items"]), total=float(data["total"]))
                )
            except WorkflowInProgress as exc:
                db.session.rollback()
                return jsonify(error="this order is already being processed", run_id=exc.context.get("run_id")), 409
        db.session.commit()  # the order row and its run together; the run's first message is published now
        return jsonify(id=order.id, run_id=order.run_id), 201

    @app.get("/orders/<order_id>")
    def show_order(order_id: str) -> Any:
        order = db.session.get(ShopOrder, order_id) or abort(404)
        try:
            run = wf.latest(order_id)
        except RecordNotFound:
            return jsonify(id=order.id, run_id=None)
        return jsonify(
            id=order.id,
            cancelled=order.cancelled,
            run_id=run.run_id,
            status=run.status.name,
            run_state=run.run_state.name,
            charge_id=run.object.charge_id,
        )

    @app.post("/orders/<order_id>/cancel")
    def cancel_order(order_id: str) -> Any:
        order = db.session.get(ShopOrder, order_id) or abort(404)
        try:
            with workflows.joined():
                wf.cancel(str(order.run_id), reason="cancelled by the customer")
                order.cancelled = True
                db.session.commit()
        except InvalidRunStateTransition as exc:
            return jsonify(error=str(exc)), 409
        return jsonify(id=order_id, cancelled=True)

    return app
