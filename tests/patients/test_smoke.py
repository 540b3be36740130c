import pytest
from django.urls import reverse


@pytest.mark.django_db
def test_it_shows_own_location_patient_and_hides_other(
    client, front_desk, north_patient, south_patient
):
    client.force_login(front_desk)
    own = client.get(reverse("patients:detail", args=[north_patient.pk]))
    assert own.status_code == 200
    assert "Núñez" in own.content.decode()
    other = client.get(reverse("patients:detail", args=[south_patient.pk]))
    assert other.status_code == 404


@pytest.mark.django_db
def test_it_finds_patient_by_accentless_name_fragment(client, front_desk, north_patient):
    client.force_login(front_desk)
    response = client.get(reverse("patients:list"), {"q": "nune"})
    assert north_patient in response.context["page"].object_list
