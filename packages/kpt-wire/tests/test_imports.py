import kpt.wire


def test_public_names_are_pinned():
    assert sorted(kpt.wire.__all__) == kpt.wire.__all__
    assert kpt.wire.__all__ == [
        "AsyncClient",
        "CallTimeout",
        "Client",
        "HandlerError",
        "Limits",
        "ListenerBounds",
        "Message",
        "PROTOCOL",
        "ProtocolError",
        "RemoteError",
        "Server",
        "TransportError",
        "VERSION",
        "WireError",
        "__version__",
        "decode",
        "encode",
        "generate_keys",
        "is_local",
    ]


def test_error_hierarchy_lets_callers_catch_one_root():
    assert issubclass(kpt.wire.TransportError, kpt.wire.WireError)
    assert issubclass(kpt.wire.CallTimeout, kpt.wire.TransportError)
    assert issubclass(kpt.wire.CallTimeout, TimeoutError)
    assert issubclass(kpt.wire.RemoteError, kpt.wire.WireError)
    assert issubclass(kpt.wire.ProtocolError, kpt.wire.WireError)


def test_importing_does_not_pull_torch():
    import subprocess
    import sys

    code = "import sys, kpt.wire; assert 'torch' not in sys.modules, 'kpt.wire imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
