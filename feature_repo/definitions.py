"""OneRec feature definitions: users, videos, their sequences, and one FeatureService per model.

`feast apply` imports this file from a rendered run folder (`onerec.features.prepare_repo`), so
every source path is relative to the repo: Feast resolves it against the folder that holds
feature_store.yaml, and a fresh directory works. Each source is a folder of parquet parts: the
stream writer adds a part per batch instead of rewriting one growing file.

Sequence rows are stamped 1 ms after the newest event they contain, so a training sample at time
t (Feast joins rows stamped <= t) sees only events strictly before t. Lengths are not declared
here: the writer bounds the lists with data.max_seq_len / max_pos_seq_len / max_long_seq_len.
This file imports only feast, so the feature server image does not need onerec.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Int64, String

OFFLINE = "data/offline"  # offline store root, relative to the repo folder
FOREVER = timedelta(0)  # ttl 0: a row stays valid until a newer row for the key replaces it

# A viewer, keyed by KuaiRand's user_id.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
# A short video, keyed by KuaiRand's video_id.
video = Entity(name="video", join_keys=["video_id"], value_type=ValueType.INT64)

# Static profile, one row per user, stamped before the first logged event.
user_profile_source = FileSource(name="user_profile_source", path=f"{OFFLINE}/user_profile",
                                 timestamp_field="event_timestamp")
# Sequence history: one row per user per update (offline), the batch side of the pushes.
user_recent_source = FileSource(name="user_recent_source", path=f"{OFFLINE}/user_recent",
                                timestamp_field="event_timestamp")
user_positive_source = FileSource(name="user_positive_source", path=f"{OFFLINE}/user_positive",
                                  timestamp_field="event_timestamp")
user_long_source = FileSource(name="user_long_source", path=f"{OFFLINE}/user_long",
                              timestamp_field="event_timestamp")
# Video side features, one row per video, stamped at upload.
video_source = FileSource(name="video_source", path=f"{OFFLINE}/video_features",
                          timestamp_field="event_timestamp")

# Streaming updates from the impression stream (onerec.features.StreamWriter pushes here).
user_recent_push = PushSource(name="user_recent_push", batch_source=user_recent_source)
user_positive_push = PushSource(name="user_positive_push", batch_source=user_positive_source)
user_long_push = PushSource(name="user_long_push", batch_source=user_long_source)

# Static user features (OneRec's user static pathway).
user_profile = FeatureView(
    name="user_profile", entities=[user], ttl=FOREVER, source=user_profile_source,
    schema=[
        Field(name="user_active_degree", dtype=String),  # activity bucket
        Field(name="is_video_author", dtype=Int64),  # 0/1
        Field(name="follow_user_num", dtype=Int64),  # accounts followed
        Field(name="fans_user_num", dtype=Int64),  # followers
        Field(name="friend_user_num", dtype=Int64),  # mutual follows
        Field(name="register_days", dtype=Int64),  # account age in days
    ],
)

# Short-term pathway: the last data.max_seq_len clicked videos, oldest first.
user_recent = FeatureView(
    name="user_recent", entities=[user], ttl=FOREVER, source=user_recent_push,
    schema=[
        Field(name="recent_video_ids", dtype=Array(Int64)),  # clicked videos
        Field(name="recent_watch_ratios", dtype=Array(Float32)),  # play time / duration (NaN: unknown)
        Field(name="recent_times_ms", dtype=Array(Int64)),  # when each was shown (epoch ms)
    ],
)

# Positive-feedback pathway: the last data.max_pos_seq_len long-viewed or liked videos.
user_positive = FeatureView(
    name="user_positive", entities=[user], ttl=FOREVER, source=user_positive_push,
    schema=[
        Field(name="positive_video_ids", dtype=Array(Int64)),  # long views and likes
        Field(name="positive_times_ms", dtype=Array(Int64)),  # when each was shown (epoch ms)
    ],
)

# Lifelong pathway: the last data.max_long_seq_len shown videos, and the writer's watermark.
user_long = FeatureView(
    name="user_long", entities=[user], ttl=FOREVER, source=user_long_push,
    schema=[
        Field(name="long_video_ids", dtype=Array(Int64)),  # every shown video
        Field(name="last_event_ms", dtype=Int64),  # newest event applied (idempotence watermark)
        Field(name="last_event_video_ids", dtype=Array(Int64)),  # videos applied at that ms
    ],
)

# Item side features for the transformer and the reward model.
video_features = FeatureView(
    name="video_features", entities=[video], ttl=FOREVER, source=video_source,
    schema=[
        Field(name="semantic_ids", dtype=Array(Int64)),  # codebook tokens (empty: no codebook)
        Field(name="tag", dtype=String),  # category ids, comma-joined
        Field(name="duration_ms", dtype=Int64),  # video length (0: unknown)
        Field(name="upload_time_ms", dtype=Int64),  # freshness: age = request time - this
        Field(name="author_id", dtype=Int64),  # uploader
    ],
)

# Model v1 (encoder_decoder over short / positive / lifelong video ids).
onerec_v1 = FeatureService(
    name="onerec_v1",
    features=[user_recent[["recent_video_ids"]], user_positive[["positive_video_ids"]],
              user_long[["long_video_ids"]]],
)

# Model v2: v1 plus the static profile and the feedback values of the short sequence.
onerec_v2 = FeatureService(
    name="onerec_v2",
    features=[user_recent, user_positive[["positive_video_ids"]], user_long[["long_video_ids"]],
              user_profile],
)

# What the transformer reads per candidate video.
video_v1 = FeatureService(name="video_v1", features=[video_features])
