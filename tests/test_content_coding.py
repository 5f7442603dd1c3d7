from aigrid.content_coding import coded


def test_coded_names_a_compressed_answer_only() -> None:
    assert coded({}) is None
    assert coded({"content-encoding": ""}) is None
    assert coded({"content-encoding": " Identity "}) is None
    assert coded({"content-encoding": "GZip"}) == "gzip"
    assert coded({"content-encoding": "gzip, br"}) == "gzip, br"
