import importlib

import pytest

import megaservice
from megaservice import compat


@pytest.fixture
def comps_alias():
    compat.install()
    yield
    compat.uninstall()


@pytest.mark.usefixtures("comps_alias")
def test_opea_import_paths_resolve_to_megaservice():
    comps = importlib.import_module("comps")
    docarray = importlib.import_module("comps.cores.proto.docarray")
    api_protocol = importlib.import_module("comps.cores.proto.api_protocol")
    constants = importlib.import_module("comps.cores.mega.constants")
    utils = importlib.import_module("comps.cores.mega.utils")
    version = importlib.import_module("comps.version")
    assert comps.ServiceOrchestrator is megaservice.ServiceOrchestrator
    assert comps.MicroService is megaservice.MicroService
    assert docarray.RetrieverParms is megaservice.RetrieverParms
    assert api_protocol.ChatCompletionRequest is megaservice.ChatCompletionRequest
    assert constants.ServiceType is megaservice.ServiceType
    assert utils.handle_message([{"role": "user", "content": "hi"}]) == "user: hi\n"
    assert version.__version__ == megaservice.__version__


def test_uninstall_removes_the_alias():
    compat.install()
    compat.uninstall()
    with pytest.raises(ImportError):
        importlib.import_module("comps")
