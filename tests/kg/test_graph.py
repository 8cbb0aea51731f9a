import gzip
import time

from kg.graph import load_graph


def test_plain_tsv_with_header_and_bad_rows(tmp_path):
    path = tmp_path / "g.tsv"
    path.write_text("head\trelation\ttail\na\tr\tb\nbroken row\n\tr\tc\nb\tr\tc\na\tr\tb\n")
    g = load_graph(path, use_cache=False)
    assert g.num_triples == 2
    assert g.report.bad_rows == 2  # wrong column count, empty head
    assert g.report.duplicates == 1
    assert {why for _, _, why in g.report.bad_examples} == {"expected 3 columns, got 1", "empty head, relation or tail"}


def test_plain_tsv_without_header_gz(tmp_path):
    path = tmp_path / "g.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("x\tlinks\ty\ny\tlinks\tz\n")
    g = load_graph(path, use_cache=False)
    assert g.entities == ["x", "y", "z"] and g.relations == ["links"]


def test_ntriples_uses_labels_and_keeps_iris(tmp_path):
    path = tmp_path / "g.nt"
    path.write_text(
        "<http://ex.org/a> <http://ex.org/p#knows> <http://ex.org/b> .\n"
        '<http://ex.org/a> <http://www.w3.org/2000/01/rdf-schema#label> "Alice"@en .\n'
        '<http://ex.org/b> <http://ex.org/p#age> "42" .\n'
        "this is not a triple\n"
    )
    g = load_graph(path, use_cache=False)
    assert g.report.bad_rows == 1
    assert "Alice" in g.entity_index and "42" in g.entity_index
    assert g.entity_ids[g.entity_index["Alice"]] == "<http://ex.org/a>"
    assert g.relations == ["http://ex.org/p#knows", "http://ex.org/p#age"]  # exactly as in the file


def test_fb15k_labelled(fb15k):
    assert fb15k.num_triples == 310_116
    assert len(fb15k.relations) == 237
    assert fb15k.num_entities == 14_541
    assert len(set(fb15k.entities)) == fb15k.num_entities  # names are unique tool arguments
    assert "/film/film/genre" in fb15k.relation_index  # relations exactly as in the file
    i = fb15k.entity_index["Dominican Republic"]
    assert fb15k.entity_ids[i] == "/m/027rn"
    # a name shared by several ids gets a qualifier, the type when the graph tells it
    assert fb15k.report.renamed_entities > 0
    assert "Drama" not in fb15k.entity_index


def test_fb15k_cached_load_is_fast(kg_data, fb15k, graph_cache):
    assert not fb15k.report.from_cache  # the session fixture parsed it
    start = time.perf_counter()
    again = load_graph(kg_data / "fb15k237-labeled.tsv.gz", cache=graph_cache)
    assert again.report.from_cache
    assert time.perf_counter() - start < 3.0
    assert again.entities == fb15k.entities and again.triples == fb15k.triples


def test_folder_of_triple_files(nations):
    # train + valid + test, not literals.txt (numeric attributes, not relations)
    assert nations.num_triples == 1992 and nations.num_entities == 14
    assert "area" not in nations.relation_index


def test_networkx_view(nations):
    g = nations.nx
    assert g.is_multigraph() and g.is_directed()
    assert g.number_of_edges() == 1992
    h, r, t = nations.triples[0]
    assert g.has_edge(nations.entities[h], nations.entities[t], key=nations.relations[r])


def test_index_matches_triples(tiny):
    knows = tiny.directed_relation("knows")
    carol = tiny.entity_index["carol"]
    assert {tiny.entities[i] for i in tiny.follow(carol, knows)} == {"dave", "erin"}
    assert {tiny.entities[i] for i in tiny.follow(carol, knows ^ 1)} == {"alice"}
