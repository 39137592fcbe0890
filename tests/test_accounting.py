"""Prices and costs: the shipped price table, cost arithmetic, and unknown models costing None."""

import pytest

from mascompare.accounting import PRICES_FILE, Accountant, Price, UsageRecord, load_prices, price_for
from mascompare.records import Usage
from mascompare.errors import UserError


def test_shipped_price_table_is_complete_and_dated():
    import yaml

    table = yaml.safe_load(PRICES_FILE.read_text())
    assert table["as_of"]
    prices = load_prices()
    assert "gpt-4o-mini" in prices and len(prices) >= 10
    for model, price in prices.items():
        assert price.input > 0 and price.output > 0, model
        assert price.cached_input is None or price.cached_input <= price.input, model


def test_cost_bills_cached_input_at_its_own_rate():
    price = Price(input=2.0, cached_input=0.5, output=8.0)
    record = UsageRecord("s", "a", "r", input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=250_000)
    assert price.cost(record) == pytest.approx(0.6 * 2.0 + 0.4 * 0.5 + 0.25 * 8.0)


def test_cached_input_without_its_own_price_is_billed_as_input():
    record = UsageRecord("s", "a", "r", input_tokens=1000, cached_input_tokens=600, output_tokens=0)
    assert Price(input=1.0, output=1.0).cost(record) == pytest.approx(0.001)


def test_unknown_model_has_no_price_and_its_cost_stays_unknown():
    assert price_for("a-model-nobody-lists") is None
    assert price_for(None) is None
    accountant = Accountant(None)
    accountant.record(UsageRecord("s", "a", "r", input_tokens=10, output_tokens=5))
    assert Usage.of(accountant.take("s")).cost_usd is None


def test_accountant_prices_every_record():
    accountant = Accountant(price_for("gpt-4o-mini"))
    accountant.record(UsageRecord("s", "a", "r", input_tokens=1_000_000, output_tokens=1_000_000))
    accountant.record(UsageRecord("s", "b", "r", input_tokens=0, output_tokens=0))
    total = Usage.of(accountant.take("s"))
    assert total.cost_usd == pytest.approx(0.15 + 0.60) and total.calls == 2


def test_bad_price_table_is_one_sentence(tmp_path):
    bad = tmp_path / "prices.yaml"
    bad.write_text("models:\n  m: {input: 1.0}\n")
    with pytest.raises(UserError, match="needs input and output"):
        load_prices(bad)
