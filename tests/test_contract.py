import pytest
from chatbot_model.contract import validate_history, trim_history
from chatbot_model.errors import InvalidInput

def test_history_validation_names_the_problem():
    assert validate_history(None) == []
    h = validate_history([{"role": "user", "content": " hi "}, {"role": "assistant", "content": "hello"}])
    assert h == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(InvalidInput, match=r"history\[0\].role is 'system'"):
        validate_history([{"role": "system", "content": "x"}])
    with pytest.raises(InvalidInput, match="must be a list"):
        validate_history("hello")
    with pytest.raises(InvalidInput, match=r"history\[1\] must be an object"):
        validate_history([{"role": "user", "content": "a"}, ["user", "b"]])
    with pytest.raises(InvalidInput, match=r"history\[0\].content is empty"):
        validate_history([{"role": "user", "content": "  "}])

def test_trim_keeps_the_newest_within_both_budgets():
    h = [{"role": "user" if i % 2 == 0 else "assistant", "content": str(i) * 10} for i in range(8)]
    assert [m["content"][0] for m in trim_history(h, 4, 10_000)] == ["4", "5", "6", "7"]
    assert [m["content"][0] for m in trim_history(h, 8, 35)] == ["6", "7"]
    assert trim_history(h, 0, 10_000) == []
    assert trim_history(h[1:4], 3, 10_000)[0]["role"] == "user"
