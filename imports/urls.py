from django.urls import path

from imports import reconciliation_views, views

app_name = "imports"

urlpatterns = [
    path("", views.batches, name="batches"),
    path("upload/", views.upload, name="upload"),
    path("upload/<uuid:pk>/mapping/", views.mapping, name="mapping"),
    path("upload/<uuid:pk>/preview/", views.preview, name="preview"),
    path("upload/<uuid:pk>/import/", views.confirm, name="confirm"),
    path("upload/<uuid:pk>/progress/", views.progress, name="progress"),
    path("batch/<int:pk>/", views.batch, name="batch"),
    path("batch/<int:pk>/report.csv", views.report, name="report"),
    path(
        "reconciliation/",
        reconciliation_views.reconciliation_report,
        name="reconciliation",
    ),
]
