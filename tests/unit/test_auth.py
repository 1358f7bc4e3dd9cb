import time

from sftd import econn
from sftd.signalling.auth import Blacklist, check_token, make_token

SECRET = b"s3cret"


def test_valid_token_may_start():
    user, cred = make_token(SECRET, int(time.time()) + 60)
    result = check_token(SECRET, user, cred)
    assert result.status == econn.STATUS_OK and result.may_start


def test_join_only_token():
    user, cred = make_token(SECRET, int(time.time()) + 60, may_start=False)
    result = check_token(SECRET, user, cred)
    assert result.status == econn.STATUS_OK and not result.may_start


def test_wrong_secret_is_invalid():
    user, cred = make_token(b"other", int(time.time()) + 60)
    assert check_token(SECRET, user, cred).status == econn.STATUS_AUTH_INVALID


def test_tampered_username_is_invalid():
    user, cred = make_token(SECRET, int(time.time()) + 60, may_start=False)
    assert check_token(SECRET, user.replace("s=0", "s=1"), cred).status == \
        econn.STATUS_AUTH_INVALID


def test_malformed_inputs_are_invalid():
    for user, cred in ((None, None), (1, "x"), ("d=1.v=2.k=0.s=1.r=a", "x"), ("", "")):
        assert check_token(SECRET, user, cred).status == econn.STATUS_AUTH_INVALID


def test_expired_token():
    user, cred = make_token(SECRET, int(time.time()) - 1)
    assert check_token(SECRET, user, cred).status == econn.STATUS_AUTH_EXPIRED


def test_blacklist_older_than_and_exact():
    bl = Blacklist("<6.2.9,6.2.11")
    assert bl.blocks("6.2.8") and bl.blocks("5.9") and bl.blocks("6.2.11")
    assert not bl.blocks("6.2.9") and not bl.blocks("6.2.10") and not bl.blocks("7.0")


def test_blacklist_never_blocks_development_builds():
    assert not Blacklist("<6.2.9").blocks("0.0.1")


def test_blacklist_ignores_unparseable_client_versions():
    assert not Blacklist("<6.2.9").blocks("abc") and not Blacklist("<6").blocks(None)
