import types

import megaservice


def test_all_public_names_are_exported():
    public = {
        name
        for name, value in vars(megaservice).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(megaservice.__all__) - {"__version__"} == public
