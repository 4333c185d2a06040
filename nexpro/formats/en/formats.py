# One way of writing dates on every admin page, the same as the sync's own columns
# ("2026-12-02 00:38"), instead of English's "Dec. 2, 2026, 12:41 a.m.".
DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
