"""The patient merge tool: pick the other record, compare side by side, confirm.

One URL, `patients:merge` on the record the user started from: without `other` it
is the search; with `other` the comparison; a POST merges. Both records must be
ones the user may change — a merge rewrites both — and either one out of reach
is a 404, like every other patient URL.
"""

from typing import cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from locations.access import CHANGE_PATIENTS
from patients import selectors
from patients.merge import MergeRefused, merge_candidates, merge_comparison, patient_merge
from patients.models import Patient
from practicecrm.audit import log_access


class MergeForm(forms.Form):
    """Which of the two records survives; the other one's contents move onto it."""

    survivor = forms.TypedChoiceField(
        label="Keep this record",
        coerce=int,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose the record that stays."},
    )

    def __init__(self, *args, pair: tuple[Patient, Patient], **kwargs):
        super().__init__(*args, **kwargs)
        field = cast(forms.TypedChoiceField, self.fields["survivor"])
        field.choices = [
            (p.pk, f"{p.display_name} (record #{p.pk}, {p.home_location.name})") for p in pair
        ]


def _get_other_for_user(request: HttpRequest, patient: Patient) -> Patient | None:
    """The record picked to merge with, or None while none is picked; 404 if out of reach."""
    raw = request.POST.get("other") if request.method == "POST" else request.GET.get("other")
    if not raw:
        return None
    if not raw.isdigit() or int(raw) == patient.pk:
        raise Http404("No such patient.")
    return selectors.patient_get(user=request.user, pk=int(raw), perm=CHANGE_PATIENTS)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def patient_merge_view(request: HttpRequest, pk: int) -> HttpResponse:
    patient = selectors.patient_get(user=request.user, pk=pk, perm=CHANGE_PATIENTS)
    other = _get_other_for_user(request, patient)
    if other is None:
        if request.method == "POST":
            raise Http404("Pick the record to merge with first.")
        query = request.GET.get("q", "").strip()
        return render(
            request,
            "patients/patient_merge_search.html",
            {
                "patient": patient,
                "query": query,
                "candidates": merge_candidates(user=request.user, patient=patient, query=query),
            },
        )
    pair = (patient, other)
    form = MergeForm(request.POST or None, pair=pair, initial={"survivor": patient.pk})
    if request.method == "POST" and form.is_valid():
        survivor, duplicate = pair if form.cleaned_data["survivor"] == patient.pk else pair[::-1]
        try:
            patient_merge(survivor=survivor, duplicate=duplicate, by=request.user)
        except MergeRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"{duplicate.display_name} (record #{duplicate.pk}) was merged into this record.",
            )
            return redirect(survivor)
    if request.method == "GET":
        log_access(patient)
        log_access(other)
    return render(
        request,
        "patients/patient_merge_confirm.html",
        {
            "patient": patient,
            "other": other,
            "sides": merge_comparison(patients=list(pair)),
            "form": form,
        },
    )
