import pytest

from surgesim.workflows.expressions import Evaluator, WorkflowError, expression_of, parse, ExpressionSyntaxError


def ev(text, **vars):
    return Evaluator(vars).eval(text)


def test_operators_and_literals():
    assert ev("1 + 2 * 3") == 7
    assert ev("7 // 2") == 3 and ev("7 % 4") == 3 and ev("7 / 2") == 3.5
    assert ev('"a" + "b"') == "ab"
    assert ev("true and not false") is True
    assert ev("x == null", x=None) is True
    assert ev("1 < 2 and 2 <= 2 and 3 != 4") is True
    assert ev('"k" in m', m={"k": 1}) is True and ev("3 in l", l=[1, 2]) is False
    assert ev("-x", x=4) == -4


def test_access_and_functions():
    m = {"body": {"items": [{"id": "a"}], "n": "42"}}
    assert ev('r.body.items[0]["id"]', r=m) == "a"
    assert ev('int(r.body.n) + 1', r=m) == 43
    assert ev('map.get(r.body, "missing")', r=m) is None
    assert ev('map.get(r, ["body", "n"])', r=m) == "42"
    assert ev('default(map.get(r, "x"), "fallback")', r=m) == "fallback"
    assert ev('len(r.body.items)', r=m) == 1
    assert ev('string(3) + "s"') == "3s"
    assert ev("json.decode(s).a", s='{"a": [1]}') == [1]
    assert ev('json.decode(json.encode(m))', m={"a": 1}) == {"a": 1}
    assert ev('text.to_upper("ab")') == "AB"
    assert ev('text.split("a,b", ",")') == ["a", "b"]
    assert ev('text.replace_all("aXa", "X", "-")') == "a-a"
    assert ev('text.substring("hello", 1, 3)') == "el"


@pytest.mark.parametrize("text,tag", [
    ("missing", "KeyError"), ("m.nope", "KeyError"), ("l[5]", "IndexError"),
    ('1 + "a"', "TypeError"), ("1 // 0", "ZeroDivisionError"), ("1 and true", "TypeError"),
    ('int("x")', "ValueError"),
])
def test_errors_are_tagged_maps(text, tag):
    with pytest.raises(WorkflowError) as e:
        ev(text, m={"a": 1}, l=[1])
    assert tag in e.value.value["tags"] and e.value.value["message"]


def test_attributes_are_map_keys_never_python_attributes():
    with pytest.raises(WorkflowError) as e:
        ev("x.__class__", x={})
    assert e.value.value["tags"] == ["KeyError"]
    assert ev("x.__class__", x={"__class__": 1}) == 1
    with pytest.raises(WorkflowError):
        ev('s.upper', s="abc")


@pytest.mark.parametrize("text", ["__import__('os')", "lambda: 1", "[i for i in l]",
                                  "open('f')", "f(a=1)", "x if y else z"])
def test_python_beyond_the_syntax_is_refused(text):
    with pytest.raises(ExpressionSyntaxError):
        parse(text)


def test_only_whole_values_are_expressions():
    assert expression_of("${a + 1}") == "a + 1"
    assert expression_of("id-${a}") is None
    assert Evaluator({"a": 1}).resolve({"k": ["${a + 1}", "lit ${a}"]}) == {"k": [2, "lit ${a}"]}
