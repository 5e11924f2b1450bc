from scale_ray.settings import Settings


def test_from_env_parses_types() -> None:
    env = {
        "SCALE_DATA_ROOT": "s3://bucket/scale",
        "SCALE_NUM_BUCKETS": "128",
        "SCALE_CORS_ORIGINS": "https://app.example, http://localhost:3000",
        "SCALE_GROUP_COMMIT_MAX_DELAY_MS": "2.5",
        "UNRELATED": "x",
    }
    s = Settings.from_env(env)
    assert s.num_buckets == 128
    assert s.cors_origins == ("https://app.example", "http://localhost:3000")
    assert s.group_commit_max_delay_ms == 2.5
    assert not s.is_local
    assert s.table_uri("transactions") == "s3://bucket/scale/transactions"


def test_round_trip_through_env(tmp_path) -> None:
    s = Settings(data_root=str(tmp_path), writer_shards=3, cors_origins=("a", "b"))
    again = Settings.from_env(s.as_env())
    assert again == Settings(
        data_root=str(tmp_path.resolve()), writer_shards=3, cors_origins=("a", "b")
    )


def test_overrides_win() -> None:
    assert Settings.from_env({"SCALE_WRITER_SHARDS": "4"}, writer_shards=1).writer_shards == 1
