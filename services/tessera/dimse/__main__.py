"""``python -m tessera.dimse``: the DIMSE gateway (its HTTP side on ``dimse_http_port``;
the DICOM ports are opened by the app's lifespan)."""

from tessera.shared.serve import serve

if __name__ == "__main__":
    serve("tessera.dimse.app:create_app", "dimse_http_port")
