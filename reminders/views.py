"""Twilio webhooks. Public URLs, so every request must carry a valid X-Twilio-Signature."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST
from twilio.request_validator import RequestValidator

from practicecrm.audit import system_actor
from reminders import services


def _signed_by_twilio(request: HttpRequest) -> bool:
    """Check the signature over the URL Twilio called and the POSTed parameters.

    Behind a proxy the URL Django sees is not the one Twilio signed, so with
    TWILIO_WEBHOOK_BASE_URL set the public URL is rebuilt from it.
    """
    if not settings.TWILIO_AUTH_TOKEN:
        return False
    base = settings.TWILIO_WEBHOOK_BASE_URL.rstrip("/")
    url = f"{base}{request.get_full_path()}" if base else request.build_absolute_uri()
    signature = request.headers.get("X-Twilio-Signature", "")
    return RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(url, request.POST, signature)


@csrf_exempt  # Twilio cannot send a CSRF token; the signature takes its place.
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    """Message status callback: queued … sent → delivered / undelivered / failed."""
    if not _signed_by_twilio(request):
        return HttpResponseForbidden("Invalid signature.")
    services.message_status_update(
        provider_id=request.POST.get("MessageSid", ""),
        provider_status=request.POST.get("MessageStatus", ""),
        error_code=request.POST.get("ErrorCode", ""),
    )
    # 200 even for a message we do not know: Twilio would otherwise retry forever.
    return HttpResponse(status=200)


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    """A patient's SMS to one of the practice's numbers (STOP, START, C, or anything)."""
    if not _signed_by_twilio(request):
        return HttpResponseForbidden("Invalid signature.")
    # Opt-outs and confirmations change patient records: the system is their actor.
    with system_actor(replace=True):
        services.inbound_receive(
            provider_id=request.POST.get("MessageSid", ""),
            from_number=request.POST.get("From", ""),
            to_number=request.POST.get("To", ""),
            body=request.POST.get("Body", ""),
        )
    # Empty TwiML: replies (HELP, opt-out confirmation) go through the outbox instead.
    return HttpResponse("<Response/>", content_type="text/xml")


@csrf_exempt  # RFC 8058 one-click: the mail provider POSTs without a session or token.
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """The email's unsubscribe link: a page with one button, and RFC 8058 one-click.

    The signed token names the recipient; no login, since the patient has none.
    GET never changes anything (mail scanners follow links); POST withdraws email
    consent, recorded as the patient's own choice.
    """
    from django.core import signing
    from django.shortcuts import render

    from patients.models import ChannelConsent, Patient
    from patients.services import consent_set

    try:
        data = signing.loads(token, salt=services.UNSUBSCRIBE_SALT, max_age=60 * 60 * 24 * 365)
        patient = Patient.objects.get(pk=data["p"])
    except (signing.BadSignature, Patient.DoesNotExist, KeyError, TypeError):
        return render(request, "reminders/unsubscribe.html", {"invalid": True}, status=404)
    done = False
    if request.method == "POST":
        with system_actor(replace=True):
            consent_set(
                patient=patient,
                channel="email",
                status=ChannelConsent.Status.REFUSED,
                method=ChannelConsent.Method.ONLINE,
                by=None,
                note="Unsubscribe link in a reminder email",
            )
        done = True
    return render(
        request,
        "reminders/unsubscribe.html",
        {"done": done, "location": patient.home_location},
    )
