"""The OHIF app-config.js generator (tessera.router.viewer.ohif): settings, CLI, what OHIF reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tessera.router.viewer.ohif import ViewerConfig, app_config, main, render
from tessera.shared.settings import Settings


def _window_config(js: str) -> dict[str, object]:
    """The object assigned to window.config (the generator writes it as JSON)."""
    assert js.startswith("/**")
    body = js.split("window.config = ", 1)[1].rstrip().removesuffix(";")
    config: dict[str, object] = json.loads(body)
    return config


def _source(config: dict[str, object]) -> dict[str, object]:
    sources = config["dataSources"]
    assert isinstance(sources, list) and len(sources) == 1
    assert sources[0]["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert config["defaultDataSourceName"] == sources[0]["sourceName"]
    source: dict[str, object] = sources[0]["configuration"]
    return source


def test_the_data_source_says_what_tessera_supports() -> None:
    source = _source(app_config(ViewerConfig("https://pacs.example/dicom-web/")))
    assert source["qidoRoot"] == source["wadoRoot"] == source["wadoUriRoot"]
    assert source["qidoRoot"] == "https://pacs.example/dicom-web"  # no trailing slash
    assert source["imageRendering"] == "wadors"
    assert source["thumbnailRendering"] == "thumbnailDirect"
    assert source["enableStudyLazyLoad"] is True
    assert source["supportsWildcard"] is True
    assert source["supportsFuzzyMatching"] is True
    assert source["qidoSupportsIncludeField"] is True
    assert source["dicomUploadEnabled"] is True
    assert source["omitQuotationForMultipartRequest"] is False
    assert source["staticWado"] is False


def test_from_settings_relative_to_the_router_or_absolute() -> None:
    served = ViewerConfig.from_settings(Settings(), router_basename="/viewer/")
    assert served.dicomweb_url == "/dicom-web"
    assert served.router_basename == "/viewer/"
    behind_ingress = ViewerConfig.from_settings(Settings(), root_path="/pacs/")
    assert behind_ingress.dicomweb_url == "/pacs/dicom-web"
    other_origin = ViewerConfig.from_settings(
        Settings(
            viewer_dicomweb_url="https://api.example/dicom-web", viewer_thumbnail_rendering="wadors"
        )
    )
    assert other_origin.dicomweb_url == "https://api.example/dicom-web"
    assert other_origin.thumbnail_rendering == "wadors"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dicomweb_url": "pacs.example/dicom-web"},
        {"dicomweb_url": "/dicom-web", "thumbnail_rendering": "jpeg"},
        {"dicomweb_url": "/dicom-web", "router_basename": "viewer"},
    ],
)
def test_invalid_configurations_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        ViewerConfig(**kwargs)


def test_render_is_javascript_assigning_window_config() -> None:
    js = render(ViewerConfig("/dicom-web", router_basename="/viewer/", friendly_name="Ärzte"))
    config = _window_config(js)
    assert config["routerBasename"] == "/viewer/"
    assert _source(config)["friendlyName"] == "Ärzte"


def test_the_command_prints_a_config_for_a_given_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(["--base-url", "https://pacs.example/dicom-web", "--thumbnail-rendering", "wadors"])
        == 0
    )
    source = _source(_window_config(capsys.readouterr().out))
    assert source["wadoRoot"] == "https://pacs.example/dicom-web"
    assert source["thumbnailRendering"] == "wadors"


def test_the_command_refuses_a_url_that_is_not_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--base-url", "pacs.example"])
    assert exit_.value.code == 2
    assert "absolute URL" in capsys.readouterr().err


def test_python_dash_m_runs_it() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera.router.viewer.ohif",
            "--base-url",
            "http://127.0.0.1:8042/dicom-web",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert _source(_window_config(done.stdout))["qidoRoot"] == "http://127.0.0.1:8042/dicom-web"


def test_a_login_adds_oidc_and_thumbnails_that_send_the_token() -> None:
    from tessera.router.viewer.ohif import ViewerConfig, app_config

    plain = app_config(ViewerConfig("/dicom-web"))
    assert "oidc" not in plain
    config = ViewerConfig(
        "/dicom-web", oidc_authority="https://idp.example/realms/pacs", oidc_client_id="ohif"
    )
    doc = app_config(config)
    (login,) = doc["oidc"]
    assert login["authority"] == "https://idp.example/realms/pacs"
    assert login["client_id"] == "ohif" and login["response_type"] == "code"
    assert login["redirect_uri"] == "/callback"
    assert doc["dataSources"][0]["configuration"]["thumbnailRendering"] == "wadors"


def test_a_login_needs_both_authority_and_client() -> None:
    from tessera.router.viewer.ohif import ViewerConfig

    with pytest.raises(ValueError, match="both"):
        ViewerConfig("/dicom-web", oidc_authority="https://idp.example")


def test_the_cli_writes_the_login_too(capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.router.viewer.ohif import main

    main(["--oidc-authority", "https://idp.example", "--oidc-client-id", "ohif"])
    assert '"client_id": "ohif"' in capsys.readouterr().out
