"""Notification rules: the shape checks of the domain, the server policy (allowed hosts,
secret names, SMTP), the streak rule of events, and the webhook signature."""

from __future__ import annotations

import hashlib
import hmac

from app.domain import JobDefinition
from app.domain.notifications import validate_notifications
from app.engine.notifications import AllowedHosts, NotificationPolicy
from app.engine.notify_delivery import SmtpSettings, signature, webhook_body

HOOK = {"url": "https://hooks.example/ops", "secret_name": "ops-hook"}


def fields(errors: list) -> dict[str, str]:
    return {e.field: e.message for e in errors}


def test_the_shapes_of_the_issue_are_valid() -> None:
    rules = [
        {"on": ["failure", "timeout", "missed"], "webhook": HOOK},
        {
            "on": ["failure", "recovered"],
            "email": {"to": ["dba@example.com"]},
            "min_consecutive_failures": 3,
        },
        {"on": ["slow"], "slow_after_seconds": 900, "webhook": {"url": "https://h.example/"}},
    ]
    assert validate_notifications(rules) == []
    job = JobDefinition(
        job_id="j",
        job_name="j",
        steps=[{"type": "shell", "step_id": "s", "script": "true"}],
        notifications=rules,
    )
    assert JobDefinition.from_dict(job.to_dict()).notifications == rules


def test_every_problem_of_a_rule_is_reported_with_its_field() -> None:
    errors = fields(
        validate_notifications(
            [
                {"on": ["failure", "exploded"], "webhook": HOOK, "email": {"to": ["a@b.c"]}},
                {"on": ["slow"], "webhook": {"url": "ftp://x"}, "min_consecutive_failures": 0},
                {"on": [], "email": {"to": ["not-an-address"]}, "color": "red"},
            ]
        )
    )
    assert errors == {
        "notifications[0].on[1]": "unknown event 'exploded' (one of success, failure, timeout, "
        "cancelled, missed, recovered, slow)",
        "notifications[0]": "must have exactly one of 'webhook' or 'email'",
        "notifications[1].webhook.url": "must be an http:// or https:// URL with a host",
        "notifications[1].min_consecutive_failures": "must be an integer from 1 to 1000",
        "notifications[1].slow_after_seconds": "is required for the 'slow' event",
        "notifications[2].color": "unknown field",
        "notifications[2].on": "must be a non-empty list of: success, failure, timeout, "
        "cancelled, missed, recovered, slow",
        "notifications[2].email.to[0]": "is not an e-mail address",
    }


def _job(*rules: dict) -> JobDefinition:
    return JobDefinition(job_id="j", job_name="j", notifications=list(rules))


def test_the_policy_refuses_what_this_server_cannot_deliver() -> None:
    policy = NotificationPolicy(
        AllowedHosts.parse(["hooks.example", "10.0.0.0/8", "192.0.2.7"]),
        frozenset({"ops-hook"}),
        email_enabled=False,
    )
    assert policy.errors(_job({"on": ["failure"], "webhook": HOOK})) == []
    assert (
        policy.errors(
            _job(
                {"on": ["failure"], "webhook": {"url": "http://10.1.2.3:8080/x"}},
                {"on": ["failure"], "webhook": {"url": "http://192.0.2.7/x"}},
            )
        )
        == []
    )
    errors = fields(
        policy.errors(
            _job(
                {"on": ["failure"], "webhook": {"url": "http://169.254.169.254/latest"}},
                {
                    "on": ["failure"],
                    "webhook": {"url": "https://hooks.example/", "secret_name": "nope"},
                },
                {"on": ["failure"], "email": {"to": ["dba@example.com"]}},
            ),
            prefix="job",
        )
    )
    assert errors == {
        "job.notifications[0].webhook.url": "address '169.254.169.254' is outside "
        "V2_WEBHOOK_ALLOWED_HOSTS",
        "job.notifications[1].webhook.secret_name": "unknown secret 'nope' (not in "
        "V2_NOTIFICATION_SECRETS)",
        "job.notifications[2].email": "e-mail is off: V2_SMTP_URL is not set",
    }


def test_no_allowed_hosts_means_no_webhooks() -> None:
    rule = {"on": ["success"], "webhook": {"url": "https://hooks.example/"}}
    errors = NotificationPolicy().errors(_job(rule))
    assert fields(errors) == {
        "notifications[0].webhook.url": "webhooks are off: V2_WEBHOOK_ALLOWED_HOSTS is empty"
    }


def test_names_only_lists_refuse_other_names_at_creation() -> None:
    names = AllowedHosts.parse(["hooks.example"])
    assert names.check_literal("HOOKS.example.") is None
    assert names.check_literal("evil.example") == (
        "host 'evil.example' is not in V2_WEBHOOK_ALLOWED_HOSTS"
    )
    # With ranges listed, a name is left to the check at delivery (after resolving it).
    assert AllowedHosts.parse(["10.0.0.0/8"]).check_literal("evil.example") is None


async def test_a_name_is_resolved_against_the_ranges() -> None:
    loopback = AllowedHosts.parse(["127.0.0.0/8"])
    assert await loopback.check("localhost") is None
    private = AllowedHosts.parse(["10.0.0.0/8"])
    why = await private.check("localhost")
    assert why is not None and "outside V2_WEBHOOK_ALLOWED_HOSTS" in why


def test_signature_is_the_hmac_sha256_of_the_body() -> None:
    body = webhook_body({"event": "failure", "event_id": "e1"})
    assert body == b'{"event":"failure","event_id":"e1"}'
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature("k", body) == f"sha256={expected}"


def test_smtp_urls() -> None:
    plain = SmtpSettings.from_url("smtp://mailer:p%40ss@mail.example:2525", "s@example.com")
    assert (plain.hostname, plain.port, plain.use_tls, plain.start_tls) == (
        "mail.example",
        2525,
        False,
        None,
    )
    assert (plain.username, plain.password) == ("mailer", "p@ss")
    strict = SmtpSettings.from_url("smtp://mail.example?starttls=required", "s@example.com")
    assert (strict.port, strict.start_tls) == (25, True)
    tls = SmtpSettings.from_url("smtps://mail.example", "s@example.com")
    assert (tls.port, tls.use_tls, tls.start_tls) == (465, True, None)


def test_an_unparsable_url_is_a_field_error_not_a_crash() -> None:
    errors = validate_notifications([{"on": ["failure"], "webhook": {"url": "http://[::1"}}])
    assert fields(errors) == {"notifications[0].webhook.url": "is not a valid URL"}
