"""The brokers' kombu transports, each with a fix the stock one lacks.

`Transport`: kombu's filesystem transport, with each message written atomically.

The stock transport writes a message straight into the queue folder under its final
name, while a consumer in another process lists the folder and moves each file away
to read it: a consumer can take a file that is still being written, fail to decode
it, and stop the worker ("Unrecoverable error: JSONDecodeError"). Here a message is
written under a name no consumer looks at, then renamed into place, which is atomic
within one folder. Selected by CELERY_BROKER_TRANSPORT for `filesystem://` brokers.

`RedisTransport`: kombu's Redis transport, whose channels say "connection lost" when
asked for a connection after theirs was closed. The stock channel fails there with
`AttributeError: 'NoneType' object has no attribute 'hostname'` (celery/kombu #582):
when Redis goes away while a task runs, the worker closes the old connection and
reconnects, and the task's acknowledgement, sent later on the old channel, raised an
error the worker does not expect, so it stopped ("Unrecoverable error"). As a
connection error it is what the worker expects: it logs that it could not
acknowledge and goes on, and Redis delivers the task again after its visibility
timeout (the run is finished by then, so the task does nothing). Selected by
CELERY_BROKER_TRANSPORT for `redis://` brokers.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # The same final name as kombu's, so consumers order and filter it alike; the
        # partial file's name has no ".<queue>.msg" suffix, so no consumer takes it.
        final = os.path.join(self.data_folder_out, f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg")
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


class RedisChannel(redis.Channel):
    def _connparams(self, asynchronous=False):
        transport = self.connection
        if transport is None or transport.client is None:
            raise redis.redis.exceptions.ConnectionError(
                "This broker channel's connection is closed (the broker went away since it was opened)."
            )
        return super()._connparams(asynchronous=asynchronous)


class RedisTransport(redis.Transport):
    Channel = RedisChannel
