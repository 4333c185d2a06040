"""The default broker (kombu's filesystem transport, with atomic writes)."""

import json
import os
import threading

from kombu import Connection

from nexpro import broker


def filesystem_connection(folder):
    (folder / "control").mkdir(exist_ok=True)
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }
    return Connection("filesystem://localhost/", transport=broker.Transport, transport_options=options)


def test_a_consumer_never_sees_a_message_being_written(tmp_path, monkeypatch):
    seen_while_writing = []
    real_replace = os.replace

    def replace(source, destination):
        # At the moment of the rename the message is complete and invisible to consumers.
        seen_while_writing.append([name for name in os.listdir(tmp_path) if name.partition(".")[2] == "single.msg"])
        with open(source, "rb") as partial:
            json.loads(partial.read())
        real_replace(source, destination)

    monkeypatch.setattr(broker.os, "replace", replace)
    with filesystem_connection(tmp_path) as connection:
        # kombu keeps exchange bindings per transport class: one queue name per test.
        connection.SimpleQueue("single").put({"n": 1})

    assert seen_while_writing == [[]]
    assert [name for name in os.listdir(tmp_path) if name.endswith(".single.msg")]


def test_messages_put_while_a_consumer_reads_all_arrive_intact(tmp_path):
    count = 300
    received, errors = [], []

    def consume():
        with filesystem_connection(tmp_path) as connection:
            queue = connection.SimpleQueue("jobs")
            try:
                while len(received) < count:
                    message = queue.get(timeout=10)
                    received.append(message.payload["n"])
                    message.ack()
            except Exception as exc:  # a half-written message fails to decode here
                errors.append(exc)

    with filesystem_connection(tmp_path) as connection:
        queue = connection.SimpleQueue("jobs")  # declared before the consumer starts
        consumer = threading.Thread(target=consume)
        consumer.start()
        for n in range(count):
            queue.put({"n": n, "padding": "x" * 20_000})
    consumer.join(timeout=60)

    assert errors == []
    assert sorted(received) == list(range(count))
