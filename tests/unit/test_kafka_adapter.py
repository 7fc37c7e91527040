"""The librdkafka adapter without a broker: the configuration made from KafkaSettings, the settling of a
produce() call's future by delivery reports from another thread, and the throttled logging."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from pydantic import SecretStr

from services.core.kafka import (
    MAX_RECORD_BYTES,
    AckedProducer,
    ProduceUnavailable,
    _Acks,
    _Throttle,
    error_name,
    librdkafka_config,
)
from services.core.settings import KafkaSettings

pytestmark = pytest.mark.unit


def test_plaintext_config() -> None:
    assert librdkafka_config(KafkaSettings(bootstrap_servers="k1:9092,k2:9092", client_id="ingest")) == {
        "bootstrap.servers": "k1:9092,k2:9092",
        "security.protocol": "PLAINTEXT",
        "client.id": "ingest",
    }


def test_tls_verifies_against_the_ca_file_or_the_system_store() -> None:
    with_file = librdkafka_config(KafkaSettings(security_protocol="SSL", ssl_cafile="/etc/kafka/ca.pem"))
    assert with_file["security.protocol"] == "SSL"
    assert with_file["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert "ssl.endpoint.identification.algorithm" not in with_file  # librdkafka's default: https (host name)
    assert librdkafka_config(KafkaSettings(security_protocol="SSL"))["ssl.ca.location"] == "probe"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls(mechanism: Any) -> None:
    settings = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username="wa-archive",
        sasl_password=SecretStr("s3cret"),
    )
    config = librdkafka_config(settings)
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == mechanism
    assert config["sasl.username"] == "wa-archive"
    assert config["sasl.password"] == "s3cret"
    assert config["ssl.ca.location"] == "probe"


def test_sasl_plaintext_has_no_tls_options() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password=SecretStr("p")
    )
    assert "ssl.ca.location" not in librdkafka_config(settings)


def test_sasl_settings_are_left_out_of_a_protocol_without_sasl() -> None:
    """A configuration that inherits a principal (deploy/local/demo.env) and overrides the protocol to plaintext
    (deploy/compose.yaml, the tests' super user) hands the credentials to no client."""
    settings = KafkaSettings(
        security_protocol="PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password=SecretStr("p")
    )
    assert not [key for key in librdkafka_config(settings) if key.startswith("sasl")]
    assert not [key for key in settings.client_options() if key.startswith("sasl")]


def test_producer_config() -> None:
    config = AckedProducer(KafkaSettings(), linger_ms=7)._config()
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["linger.ms"] == 7
    assert config["partitioner"] == "murmur2_random"
    assert config["message.max.bytes"] > MAX_RECORD_BYTES
    assert config["delivery.timeout.ms"] <= 30_000


def test_error_names() -> None:
    assert error_name(KafkaException(KafkaError(KafkaError._TRANSPORT))) == "_TRANSPORT"
    assert error_name(KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))) == "MSG_SIZE_TOO_LARGE"
    assert error_name(TimeoutError()) == "TimeoutError"


def report(acks: _Acks, *errors: KafkaError | None) -> None:
    """Delivery reports as librdkafka's serving thread gives them."""

    def serve() -> None:
        for error in errors:
            acks(error, None)  # type: ignore[arg-type]  # the message is not read

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join()


async def test_the_future_settles_when_the_last_record_is_acknowledged() -> None:
    acks = _Acks(asyncio.get_running_loop(), 3)
    report(acks, None, None)
    await asyncio.sleep(0.01)
    assert not acks.future.done()
    report(acks, None)
    await asyncio.wait_for(acks.future, 1)


async def test_the_first_failure_settles_the_future_and_later_reports_are_ignored() -> None:
    acks = _Acks(asyncio.get_running_loop(), 3)
    report(acks, None, KafkaError(KafkaError._MSG_TIMED_OUT), None, KafkaError(KafkaError._PURGE_QUEUE))
    with pytest.raises(ProduceUnavailable, match="_MSG_TIMED_OUT"):
        await asyncio.wait_for(acks.future, 1)


async def test_a_report_for_a_cancelled_future_is_dropped() -> None:
    loop = asyncio.get_running_loop()
    handled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: handled.append(context))
    try:
        acks = _Acks(loop, 1)
        acks.future.cancel()  # the caller's deadline passed
        report(acks, None)
        await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(previous)
    assert handled == []


def test_a_report_after_the_loop_closed_does_not_raise() -> None:
    loop = asyncio.new_event_loop()
    acks = _Acks(loop, 1)
    loop.close()
    acks(None, None)  # type: ignore[arg-type]


def test_the_throttle_lets_one_line_per_kind_and_interval_through() -> None:
    throttle = _Throttle(interval_s=3600)
    assert throttle.allow("error:_TRANSPORT") == 0
    assert throttle.allow("error:_TRANSPORT") is None
    assert throttle.allow("error:_TRANSPORT") is None
    assert throttle.allow("error:_ALL_BROKERS_DOWN") == 0
    throttle.interval_s = 0
    assert throttle.allow("error:_TRANSPORT") == 2  # how many were held back
