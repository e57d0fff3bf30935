"""Configuration of what the database holds for every alarm (``/config/policy``): the
default interval and the confirmation and PIN policy; and, read-only, what the settings
file holds (``/config/settings``): the emergency call's destinations and who is told by
e-mail and SMS, with how to change them."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from fastagi.admin import policy as admin
from fastagi.config import DEFAULT_CONFIG_FILE
from fastagi.domain.policy import NO_ANSWER_POLICIES, Policy
from fastagi.store import StoreError
from fastagi.web.actions import actor
from fastagi.web.configure.departments import LANGUAGES, MODE_TEXTS
from fastagi.web.configure.forms import Form, empty, posted, whole_number
from fastagi.web.keys import SETTINGS, STORES
from fastagi.web.security import require, template_context

INTERVAL_FIELDS = ("seconds",)
POLICY_FIELDS = (
    "no_answer_policy",
    "confirmation_attempts",
    "pin_attempts",
    "lockout_seconds",
    "confirmation_mode",
    "default_language",
)
LABELS = {
    "confirmation_attempts": "Confirmation attempts",
    "pin_attempts": "PIN attempts",
    "lockout_seconds": "Lockout",
}
DONE = {
    "interval": "Default interval saved.",
    "policy": "Policy saved.",
    "unchanged": "Nothing was changed.",
}


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/config/policy", policy_page, name="config_policy")
    router.add_post("/config/policy", set_policy)
    router.add_post("/config/interval", set_interval)
    router.add_get("/config/settings", settings_page, name="config_settings")


def _policy_form(policy: Policy) -> Form:
    return empty(
        "policy",
        POLICY_FIELDS,
        no_answer_policy=policy.no_answer_policy,
        confirmation_attempts=str(policy.confirmation_attempts),
        pin_attempts=str(policy.pin_attempts),
        lockout_seconds=str(policy.lockout_seconds),
        confirmation_mode=policy.confirmation_mode,
        default_language=policy.default_language,
    )


@require("admin")
async def policy_page(request: web.Request) -> web.StreamResponse:
    return await _render(request)


async def _render(
    request: web.Request,
    *,
    interval: Form | None = None,
    policy_form: Form | None = None,
    status: int = 200,
) -> web.Response:
    policy = await request.app[STORES].policy.load_settings()
    return aiohttp_jinja2.render_template(
        "config_policy.html",
        request,
        template_context(
            request,
            section="policy",
            done=DONE.get(request.query.get("done", "")),
            policy=policy,
            no_answer_policies=NO_ANSWER_POLICIES,
            mode_options=list(MODE_TEXTS.items()),
            language_options=[
                (code, f"{catalogue.name} ({code})")
                for code, catalogue in sorted(request.app[LANGUAGES].catalogues.items())
            ],
            interval=interval
            or empty("interval", INTERVAL_FIELDS, seconds=str(policy.default_interval_seconds)),
            policy_form=policy_form or _policy_form(policy),
        ),
        status=status,
    )


@require("admin")
async def set_interval(request: web.Request) -> web.StreamResponse:
    form, texts = await posted(request, "interval", INTERVAL_FIELDS)
    try:
        seconds = whole_number(texts["seconds"], "seconds", "The interval")
        await admin.set_default_interval(request.app[STORES], seconds, by=actor(request))
    except StoreError as exc:
        form.refuse(exc)
        return await _render(request, interval=form, status=400)
    raise web.HTTPSeeOther("/config/policy?done=interval")


@require("admin")
async def set_policy(request: web.Request) -> web.StreamResponse:
    form, texts = await posted(request, "policy", POLICY_FIELDS)
    stores = request.app[STORES]
    current = await stores.policy.load_settings()
    try:
        changes: dict[str, Any] = {}
        for name in ("no_answer_policy", "confirmation_mode", "default_language"):
            if texts[name] != getattr(current, name):
                changes[name] = texts[name]
        for name, label in LABELS.items():
            value = whole_number(texts[name], name, label)
            if value != getattr(current, name):
                changes[name] = value
        if not changes:
            raise web.HTTPSeeOther("/config/policy?done=unchanged")
        await admin.set_policy(stores, **changes, by=actor(request))
    except StoreError as exc:
        form.refuse(exc)
        return await _render(request, policy_form=form, status=400)
    raise web.HTTPSeeOther("/config/policy?done=policy")


@require("admin")
@aiohttp_jinja2.template("config_settings.html")
async def settings_page(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    return template_context(
        request,
        section="settings",
        done=None,
        emergency=settings.emergency,
        notify=settings.notify,
        config_path=DEFAULT_CONFIG_FILE,
    )
