"""Loading the code location stays light: every run, code server, sensor tick host and CLI call pays for it.

Feast, scikit-learn, XGBoost, MLflow, SciPy and Matplotlib take about 5 s of CPU to import on the
2-core machine (`python -X importtime -c "import movie_assets.definitions"`), more than the rest of the
load. The steps that use them import them; loading the definitions must not.
"""

import json
import subprocess
import sys

from movie_assets import feature_definitions
from movie_assets.feature_definitions import FEATURE_SERVICE, build_definitions

HEAVY = ("feast", "sklearn", "xgboost", "mlflow", "scipy", "matplotlib")


def test_loading_the_definitions_imports_none_of_the_heavy_libraries():
    probe = (
        "import json, sys; import movie_assets.definitions; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_the_feature_versions_are_those_of_the_built_feast_objects():
    """The versions are hashed from the spec without Feast; they must equal the hash of what Feast is given."""
    objects = build_definitions("file:///version")
    view, service = objects["movie_features"], objects[FEATURE_SERVICE]
    features = [(f.name, str(f.dtype)) for f in view.features]
    assert feature_definitions.definitions_version() == feature_definitions._hash(
        {
            "view": view.name,
            "ttl_s": view.ttl.total_seconds() if view.ttl else None,
            "features": features,
            "entities": sorted(view.entities),
            "service": service.name,
            "service_views": sorted(p.name for p in service.feature_view_projections),
        }
    )
    logic = feature_definitions.FEATURE_LOGIC_VERSION
    assert feature_definitions.feature_rows_version() == feature_definitions._hash(
        {"logic": logic, "features": features}
    )
    # the values automation has stored as code versions since issue 26: unchanged by building them without Feast
    assert (feature_definitions.definitions_version(), feature_definitions.feature_rows_version()) == (
        "723f640eab5b",
        "39c53f6c9d58",
    )


def test_importing_feast_through_the_platform_keeps_the_warning_filters():
    """Feast's modules turn on every DeprecationWarning when imported; through `import_feast` they do not."""
    probe = (
        "import warnings; from movie_assets.feature_definitions import build_definitions; "
        "from movie_assets.resources import feast_private; "
        "build_definitions('file:///x'); feast_private.field_hash('movie_features:x'); import feast; "
        "print(any(f[0] != 'ignore' and f[2] is DeprecationWarning and f[3] is None for f in warnings.filters))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False", "a filter shows every module's DeprecationWarnings"
