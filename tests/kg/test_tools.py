import json
import re

import pytest

from kg.tools import Executor, ToolRegistry, relation_parts


@pytest.fixture(scope="module")
def fb_exec(fb15k):
    return Executor(ToolRegistry(fb15k))


def test_freebase_paths_become_readable_names(fb15k):
    reg = ToolRegistry(fb15k)
    dr = fb15k.directed_relation("/film/film/written_by")
    assert reg.by_dr[dr].name == "get_film_written_by"
    assert reg.by_dr[dr ^ 1].name == "find_film_by_written_by"
    assert "written by" in reg.by_dr[dr].schema["function"]["description"]
    assert reg.by_dr[fb15k.directed_relation("/film/director/film")].name == "get_director_film"
    assert relation_parts("/award/award_winner/awards_won./award/award_honor/award_winner") == (
        "award winner",
        "awards won award winner",
        None,
    )


def test_every_tool_is_a_valid_openai_function(fb15k):
    reg = ToolRegistry(fb15k)
    names = reg.all_names()
    assert len(names) == len(set(names)) == 2 * 237 + 4
    for name in names:
        schema = reg.schema(name)
        assert schema["type"] == "function"
        fn = schema["function"]
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", fn["name"]) and fn["name"] == name
        assert fn["description"] and fn["parameters"]["type"] == "object"
        assert set(fn["parameters"]["required"]) <= set(fn["parameters"]["properties"])
        json.dumps(schema)


def test_relation_call_and_inverse(tiny):
    ex = Executor(ToolRegistry(tiny))
    assert ex.call("get_knows", {"entities": ["alice"]}) == {"entities": ["bob", "carol"], "count": 2}
    assert ex.call("find_by_knows", '{"entities": ["dave"]}') == {"entities": ["bob", "carol"], "count": 2}
    assert ex.call("get_likes", {"entities": ["bob", "carol"]})["entities"] == ["coffee", "tea"]


def test_set_tools_and_lookup(tiny):
    ex = Executor(ToolRegistry(tiny))
    assert ex.call("intersect_sets", {"sets": [["bob", "carol"], ["carol", "dave"]]})["entities"] == ["carol"]
    assert ex.call("union_sets", {"sets": [["bob"], ["carol"]]})["entities"] == ["bob", "carol"]
    assert ex.call("set_difference", {"base": ["bob", "carol"], "exclude": ["bob"]})["entities"] == ["carol"]
    assert ex.call("lookup_entity", {"name": "erin"}) == {"entity": "erin", "found": True}


@pytest.mark.parametrize(
    "name,args,kind",
    [
        ("get_director_film", {"entities": ["Steven Spielbreg"]}, "unknown_entity"),
        ("get_director_film", {"entities": "Jaws"}, "wrong_type"),
        ("get_director_film", {"entities": [3]}, "wrong_type"),
        ("get_director_film", {}, "missing_argument"),
        ("get_director_film", {"entity": ["Jaws"]}, "unexpected_argument"),
        ("get_director_film", "{not json", "invalid_json"),
        ("get_director_film", "[1, 2]", "invalid_arguments"),
        ("get_director_films", {"entities": ["Jaws"]}, "unknown_tool"),
        ("intersect_sets", {"sets": [["Jaws"]]}, "wrong_type"),
        ("set_difference", {"base": ["Jaws"]}, "missing_argument"),
        ("lookup_entity", {"name": 7}, "wrong_type"),
    ],
)
def test_bad_calls_give_error_objects(fb_exec, name, args, kind):
    result = fb_exec.call(name, args)
    assert set(result) == {"error"}
    assert result["error"]["type"] == kind
    assert result["error"]["message"]


def test_unknown_entity_suggests_the_right_name(fb_exec):
    err = fb_exec.call("get_director_film", {"entities": ["Steven Spielbreg"]})["error"]
    assert "Steven Spielberg" in err["suggestions"]
    err = fb_exec.call("lookup_entity", {"name": "steven spielberg"})["error"]
    assert err["suggestions"] == ["Steven Spielberg"]


def test_good_call_on_fb15k(fb15k, fb_exec):
    r = fb15k.relation_index["/film/director/film"]
    spielberg = fb15k.entity_index["Steven Spielberg"]
    films = sorted(fb15k.entities[t] for h, rel, t in fb15k.triples if h == spielberg and rel == r)
    assert "Jaws" in films
    assert fb_exec.call("get_director_film", {"entities": ["Steven Spielberg"]}) == {
        "entities": films,
        "count": len(films),
    }
    directors = fb_exec.call("find_director_by_film", {"entities": ["Jaws"]})["entities"]
    assert "Steven Spielberg" in directors
