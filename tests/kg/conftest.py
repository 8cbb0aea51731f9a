"""Shared fixtures: the real graphs from shared/data/kg, loaded once per session.

The session fixtures parse into a private cache dir, so the first load really
parses and the cache tests really exercise the cache.
"""

import pytest


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kg-cache")


@pytest.fixture(scope="session")
def kg_data(shared_data):
    return shared_data / "kg"


@pytest.fixture(scope="session")
def fb15k(kg_data, graph_cache):
    from kg.graph import load_graph

    return load_graph(kg_data / "fb15k237-labeled.tsv.gz", cache=graph_cache)


@pytest.fixture(scope="session")
def nations(kg_data, graph_cache):
    from kg.graph import load_graph

    return load_graph(kg_data / "nations", cache=graph_cache)


@pytest.fixture(scope="session")
def umls(kg_data, graph_cache):
    from kg.graph import load_graph

    return load_graph(kg_data / "umls", cache=graph_cache)


@pytest.fixture()
def tiny(tmp_path):
    """A hand-made graph whose answers can be worked out on paper."""
    from kg.graph import load_graph

    rows = [
        ("alice", "knows", "bob"),
        ("alice", "knows", "carol"),
        ("bob", "knows", "dave"),
        ("carol", "knows", "dave"),
        ("carol", "knows", "erin"),
        ("dave", "likes", "tea"),
        ("erin", "likes", "coffee"),
        ("bob", "likes", "tea"),
        ("carol", "likes", "coffee"),
    ]
    path = tmp_path / "tiny.tsv"
    path.write_text("head\trelation\ttail\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    return load_graph(path, use_cache=False)
