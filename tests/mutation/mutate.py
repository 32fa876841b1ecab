"""Mutation check of the security guards: remove each check that answers an advisory, in
turn, and show that the tests named for it fail.

    python -m tests.mutation.mutate              # every guard; a markdown table on stdout
    python -m tests.mutation.mutate NAME ...     # only these guards (names as in the table)
    python -m tests.mutation.mutate --list       # the guards and their tests; nothing run

For each guard the script copies src/ to a temporary directory, replaces the guard's exact
code snippet there with code that no longer checks (the working tree is never edited), runs
the named tests with PYTHONPATH pointing at the copy (the daemons that tests start inherit
it), and records KILLED when every named test failed, SURVIVED when one of them still
passed. A baseline run comes first: the named tests must all pass on an unmutated copy, or
their failing would prove nothing. A snippet found other than exactly once is an error --
the guard moved (or the snippet is ambiguous): update the table -- so the table cannot rot
silently. Exit status: 0 when every guard is KILLED, 1 when one SURVIVED or a run went
wrong, 2 for an error in the table.

Pick the narrowest tests that catch a guard: unit tests where they suffice, plus the
real-daemon advisory test in tests/security/ where one exists. A parametrised test counts
as failing when one of its cases fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "src/pyntpd"
RUN_TIMEOUT = 180.0  # s for one pytest run; a guard's tests take seconds

# Test files, to keep the table readable.
SOURCE = "tests/proto/test_source.py::"
SOURCE_AUTH = "tests/proto/test_source_auth.py::"
INTERLEAVED = "tests/proto/test_interleaved_client.py::"
SYMMETRIC = "tests/proto/test_symmetric.py::"
SERVER = "tests/proto/test_server.py::"
SERVER_AUTH = "tests/proto/test_server_auth.py::"
SERVER_PEERS = "tests/proto/test_server_peers.py::"
SERVER_MSSNTP = "tests/proto/test_server_mssntp.py::"
AUTH = "tests/proto/test_auth.py::"
ACCESS = "tests/proto/test_access.py::"
CONTROL = "tests/proto/test_control.py::"
CONTROL_AUTH = "tests/proto/test_control_auth.py::"
CONTROL_COST = "tests/proto/test_control_cost.py::"
NTS = "tests/proto/test_nts.py::"
PIDFILE = "tests/daemon/test_pidfile.py::"
KEYS = "tests/config/test_keys.py::"
FORGERIES = "tests/security/test_client_forgeries.py::"
PEERS = "tests/security/test_symmetric_peers.py::"
ABUSE = "tests/security/test_server_abuse.py::"
FILES = "tests/security/test_files_and_config.py::"
HOLES = "tests/security/test_local_holes.py::"
KE_SLOTS = "tests/proto/test_ntskeslots.py::"
KE_ABUSE = "tests/security/test_ntske_abuse.py::"
LISTENERS = "tests/security/test_listeners.py::"


@dataclass(frozen=True)
class Guard:
    name: str
    advisory: str
    file: str  # under src/pyntpd
    snippet: str  # the exact code of the check, found exactly once in `file`
    replacement: str  # the same code without the check
    tests: tuple[str, ...]  # node ids; each must fail without the check
    # Further (snippet, replacement) pairs in the same file, for a check made in two places
    # of which either alone suffices.
    more: tuple[tuple[str, str], ...] = ()


GUARDS: tuple[Guard, ...] = (
    # --- client side: proto/source.py ------------------------------------------------------
    Guard(
        "client-origin", "CVE-2015-7704/7705, CVE-2015-8138, CVE-2020-11868",
        "proto/source.py",
        "        if h.origin != self._sent_transmit and not interleaved:\n"
        "            self._drop(SourceDrop.BOGUS_ORIGIN)\n"
        "            return None\n",
        "",
        (SOURCE + "test_reply_with_wrong_origin_is_bogus",
         SOURCE + "test_reply_with_zero_origin_is_refused",
         FORGERIES + "test_cve_2015_7704_spoofed_kiss_with_a_wrong_origin_is_ignored",
         FORGERIES + "test_cve_2015_8138_zero_origin_replies_are_refused",
         FORGERIES + "test_a_replayed_reply_is_refused"),
    ),
    Guard(
        "client-transmit-never-zero", "CVE-2015-8138",
        "proto/source.py",
        "    value = 0\n"
        "    while value == 0:  # zero means \"no timestamp\" and must never be our origin\n"
        "        value = secrets.randbits(64)\n"
        "    return value\n",
        "    return secrets.randbits(64)\n",
        (SOURCE + "test_the_random_transmit_timestamp_is_never_zero",),
    ),
    Guard(
        "client-request-outstanding", "CVE-2015-8138",
        "proto/source.py",
        "        if not self._sent_transmit:\n"
        "            self._drop(SourceDrop.NO_REQUEST)\n"
        "            return None\n",
        "",
        (SOURCE + "test_reply_without_any_request_is_refused",
         SOURCE + "test_a_zero_origin_reply_with_no_request_outstanding_is_refused",
         FORGERIES + "test_cve_2015_8138_zero_origin_replies_are_refused"),
    ),
    Guard(
        "client-consumed-once", "replay (RFC 5905 §8)",
        "proto/source.py",
        "        # From here the reply answers our request: it is ours to consume, once.\n"
        "        self._sent_transmit = 0\n",
        "",
        (SOURCE + "test_second_reply_to_the_same_request_is_refused",
         FORGERIES + "test_a_replayed_reply_is_refused"),
    ),
    Guard(
        "client-duplicate", "replay (RFC 5905 §8)",
        "proto/source.py",
        "        if (h.transmit and h.transmit == self._last_server_transmit\n"
        "                and h.receive == self._last_server_receive):\n"
        "            self._drop(SourceDrop.DUPLICATE)\n"
        "            return None\n",
        "",
        (SOURCE + "test_replayed_reply_is_refused",
         INTERLEAVED + "test_a_replayed_interleaved_reply_is_a_duplicate",
         FORGERIES + "test_a_replayed_reply_is_refused"),
    ),
    Guard(
        "client-interleaved-origin", "RFC 9769 (interleaved origin test)",
        "proto/source.py",
        "        interleaved = bool(self._sent_receive) and h.origin == self._sent_receive\n",
        "        interleaved = self.spec.xleave\n",
        (INTERLEAVED + "test_a_spoofed_interleaved_reply_is_refused",
         INTERLEAVED + "test_a_reply_naming_our_previous_requests_receive_field_is_refused"),
    ),
    Guard(
        "client-mac-verifies", "CVE-2015-7871",
        "proto/source.py",
        "        return (mac is not None\n"
        "                and verify_with(key, mac, signed_part(data, mac)) is AuthResult.OK)\n",
        "        return mac is not None\n",
        (SOURCE_AUTH + "test_a_reply_under_another_key_id_is_refused",
         SOURCE_AUTH + "test_a_tampered_reply_is_refused",
         SOURCE_AUTH + "test_a_crypto_nak_neither_authenticates_nor_spends_the_request",
         FORGERIES + "test_cve_2015_7871_crypto_nak_is_not_authentication"),
    ),
    Guard(
        "client-mac-required", "CVE-2015-7871",
        "proto/source.py",
        "        key, mac = self.spec.key, packet.mac\n"
        "        if key is None:\n",
        "        key, mac = self.spec.key, packet.mac\n"
        "        return True\n"
        "        if key is None:\n",
        (SOURCE_AUTH + "test_an_unsigned_reply_is_refused",
         SOURCE + "test_signed_reply_without_a_key_is_refused",
         SYMMETRIC + "test_an_unsigned_packet_is_refused",
         FORGERIES + "test_cve_2015_7871_crypto_nak_is_not_authentication",
         FORGERIES + "test_cve_2016_1547_unauthenticated_kiss_on_a_keyed_association_is_ignored",
         PEERS + "test_unauthenticated_packets_from_the_peers_address_change_nothing"),
    ),
    Guard(
        "client-unkeyed-refuses-macs", "CVE-2015-7871",
        "proto/source.py",
        "        if key is None:\n"
        "            return mac is None\n",
        "        if key is None:\n"
        "            return True\n",
        (SOURCE + "test_signed_reply_without_a_key_is_refused",
         SOURCE + "test_crypto_nak_is_not_accepted_as_authentication"),
    ),
    Guard(
        "client-auth-before-consume", "CVE-2016-1547",
        "proto/source.py",
        "        elif not self._mac_as_keyed(data, packet):\n"
        "            self._drop(SourceDrop.AUTH)\n",
        "        elif not self._mac_as_keyed(data, packet):\n"
        "            self._sent_transmit = 0  # spent by a reply that failed authentication\n"
        "            self._drop(SourceDrop.AUTH)\n",
        (SOURCE_AUTH + "test_a_crypto_nak_neither_authenticates_nor_spends_the_request",
         FORGERIES + "test_cve_2015_7871_crypto_nak_is_not_authentication",
         FORGERIES + "test_cve_2016_1547_crypto_nak_does_not_demobilise",
         FORGERIES + "test_cve_2016_1547_unauthenticated_kiss_on_a_keyed_association_is_ignored"),
    ),
    Guard(
        "client-kod-after-origin", "CVE-2015-7704/7705, CVE-2020-11868",
        "proto/source.py",
        "        if not self._sent_transmit:\n"
        "            self._drop(SourceDrop.NO_REQUEST)\n",
        "        if h.stratum == 0:\n"
        "            return self._kiss(h.refid)\n"
        "        if not self._sent_transmit:\n"
        "            self._drop(SourceDrop.NO_REQUEST)\n",
        (SOURCE + "test_rate_kiss_with_wrong_origin_is_ignored",
         SOURCE + "test_spoofed_deny_kiss_does_not_demobilise",
         FORGERIES + "test_cve_2015_7704_spoofed_kiss_with_a_wrong_origin_is_ignored"),
    ),
    Guard(
        "client-kod-authenticated", "CVE-2016-1547",
        "proto/source.py",
        "        key = self.spec.key\n"
        "        if self.spec.nts:\n",
        "        key = self.spec.key\n"
        "        if h.stratum == 0:\n"
        "            return self._kiss(h.refid)\n"
        "        if self.spec.nts:\n",
        (SOURCE_AUTH + "test_an_unauthenticated_deny_kiss_does_not_demobilise",
         FORGERIES + "test_cve_2016_1547_unauthenticated_kiss_on_a_keyed_association_is_ignored"),
    ),
    Guard(
        "client-nts-reply-checked", "RFC 8915 §5.7",
        "proto/source.py",
        "            if check is not ReplyCheck.OK:\n"
        "                self._drop(SourceDrop.AUTH)\n"
        "                return None\n",
        "",
        (NTS + "test_a_forged_reply_does_not_consume_the_outstanding_request",),
    ),
    Guard(
        "client-nts-unique-identifier", "RFC 8915 §5.7",
        "proto/nts.py",
        "                if uid_ok or ef.value[: len(uid)] != uid:\n",
        "                if uid_ok:\n",
        (NTS + "test_a_reply_with_another_unique_identifier_is_refused",),
    ),
    Guard(
        "client-nts-authenticator", "RFC 8915 §5.7",
        "proto/nts.py",
        "        plaintext = unseal(self.s2c, data[: offsets[auth_at]], parsed[0], parsed[1])\n"
        "        if plaintext is None:\n"
        "            return ReplyCheck.BAD\n",
        "        plaintext = unseal(self.s2c, data[: offsets[auth_at]], parsed[0], parsed[1]) "
        "or b\"\"\n",
        (NTS + "test_a_reply_with_a_tampered_authenticator_is_refused",
         NTS + "test_a_forged_reply_does_not_consume_the_outstanding_request"),
    ),
    Guard(
        "client-nts-unauthenticated", "RFC 8915 §5.7",
        "proto/nts.py",
        "                return ReplyCheck.NAK\n"
        "            return ReplyCheck.BAD\n",
        "                return ReplyCheck.NAK\n"
        "            return ReplyCheck.OK\n",
        (NTS + "test_an_unauthenticated_reply_is_refused",),
    ),
    # --- symmetric mode: proto/source.py ---------------------------------------------------
    Guard(
        "peer-mac-first", "CVE-2016-1549, CVE-2015-7871 class",
        "proto/source.py",
        "        if self.spec.key is None or not self._mac_as_keyed(data, packet):\n",
        "        if self.spec.key is None:\n",
        (SYMMETRIC + "test_an_unsigned_packet_is_refused",
         SYMMETRIC + "test_a_crypto_nak_is_refused",
         SYMMETRIC + "test_a_forged_zero_origin_packet_changes_nothing",
         PEERS + "test_unauthenticated_packets_from_the_peers_address_change_nothing"),
    ),
    Guard(
        "peer-duplicate", "replay (RFC 5905 §8)",
        "proto/source.py",
        "        if h.transmit == last:\n"
        "            self._drop(SourceDrop.DUPLICATE)\n"
        "            return None\n",
        "",
        (SYMMETRIC + "test_a_duplicate_is_refused_and_changes_nothing",
         PEERS + "test_replayed_and_reflected_packets_change_nothing"),
    ),
    Guard(
        "peer-reflection", "CVE-2016-1549 class (reflection)",
        "proto/source.py",
        "        if h.transmit == self._t1 or h.transmit in self._earlier:\n",
        "        if False:\n",
        (SYMMETRIC + "test_our_own_packet_reflected_back_is_refused",
         PEERS + "test_replayed_and_reflected_packets_change_nothing"),
    ),
    Guard(
        "peer-replay", "replay (RFC 5905 §8)",
        "proto/source.py",
        "            if last and ntp_diff(h.transmit, last) <= 0:\n",
        "            if False:\n",
        (SYMMETRIC + "test_a_replayed_older_packet_is_refused_without_a_state_change",
         PEERS + "test_replayed_and_reflected_packets_change_nothing"),
    ),
    Guard(
        "peer-bogus-origin", "RFC 5905 §8 (bogus)",
        "proto/source.py",
        "            self._drop(SourceDrop.ZERO_ORIGIN if not h.origin"
        " else SourceDrop.BOGUS_ORIGIN)\n"
        "            return None\n",
        "            if not h.origin:\n"
        "                self._drop(SourceDrop.ZERO_ORIGIN)\n"
        "                return None\n"
        "            return self._measure(packet, h.origin, t4, now)\n",
        (SYMMETRIC + "test_a_bogus_origin_gives_no_sample_but_resynchronises",
         SYMMETRIC + "test_the_origin_is_consumed_by_one_sample"),
    ),
    Guard(
        "peer-zero-origin", "CVE-2015-8138 class (symmetric)",
        "proto/source.py",
        "            self._drop(SourceDrop.ZERO_ORIGIN if not h.origin"
        " else SourceDrop.BOGUS_ORIGIN)\n"
        "            return None\n",
        "            if h.origin:\n"
        "                self._drop(SourceDrop.BOGUS_ORIGIN)\n"
        "                return None\n"
        "            return self._measure(packet, h.origin, t4, now)\n",
        (SYMMETRIC + "test_the_first_packet_with_zero_origin_updates_state_but_gives_no_sample",
         PEERS + "test_replayed_and_reflected_packets_change_nothing"),
    ),
    Guard(
        "peer-origin-consumed", "replay (RFC 5905 §8)",
        "proto/source.py",
        "            self._sent_transmit, self._earlier = 0, ()\n",
        "            self._earlier = ()\n",
        (SYMMETRIC + "test_the_origin_is_consumed_by_one_sample",),
    ),
    # --- server side: proto/server.py, proto/access.py, proto/auth.py ----------------------
    Guard(
        "server-mode7", "CVE-2013-5211",
        "proto/server.py",
        "        if mode == Mode.PRIVATE:\n"
        "            counters.drop(DropReason.MODE7)\n"
        "            return None\n",
        "",
        (SERVER + "test_mode_7_is_never_answered",
         ABUSE + "test_cve_2013_5211_monlist_is_never_answered"),
    ),
    Guard(
        "server-client-mode-only", "CVE-2016-1549",
        "proto/server.py",
        "        if mode != Mode.CLIENT:\n"
        "            counters.drop(DropReason.NOT_A_REQUEST)\n"
        "            return None\n",
        "",
        (SERVER + "test_non_client_modes_are_not_answered",
         ABUSE + "test_cve_2016_1549_symmetric_active_packets_create_no_association",
         PEERS + "test_cve_2016_1549_a_strangers_symmetric_packets_get_nothing"),
    ),
    Guard(
        "server-peer-address", "CVE-2016-1549",
        "proto/server.py",
        "        if mode in _SYMMETRIC and (address, is_v6, port) in self.peer_addresses:\n",
        "        if mode in _SYMMETRIC:\n",
        (SERVER_PEERS + "test_symmetric_packets_from_anyone_else_are_dropped",
         SERVER_PEERS + "test_the_same_address_from_another_port_is_not_the_peer",
         PEERS + "test_cve_2016_1549_a_strangers_symmetric_packets_get_nothing"),
    ),
    Guard(
        "restrict-ignore", "restrict ignore",
        "proto/server.py",
        "        if flags & acc.IGNORE:\n"
        "            counters.drop(DropReason.RESTRICTED)\n"
        "            return None\n",
        "",
        (SERVER + "test_ignore_drops_silently_even_with_kod",
         SERVER_PEERS + "test_restrict_ignore_drops_a_peers_packets_too"),
    ),
    Guard(
        "restrict-noserve", "restrict noserve",
        "proto/server.py",
        "        if flags & acc.NOSERVE:\n"
        "            return self._refuse(",
        "        if False:\n"
        "            return self._refuse(",
        (SERVER + "test_noserve_drops_time_requests",
         SERVER + "test_noserve_with_kod_sends_rstr"),
    ),
    Guard(
        "restrict-notrust", "restrict notrust",
        "proto/server.py",
        "        if key is None and flags & acc.NOTRUST:\n",
        "        if False:\n",
        (SERVER + "test_notrust_drops_unauthenticated_requests",
         SERVER_AUTH + "test_notrust_refuses_a_crypto_nak_as_unauthenticated"),
    ),
    Guard(
        "restrict-fast-path", "restrict (all flags)",
        "proto/server.py",
        "        if not flags & _SPECIAL or flags & _SPECIAL_LIMITED == _OVER_RATE:\n",
        "        if True:\n",
        (SERVER + "test_classify_hands_restricted_sources_to_respond_full_already_checked",
         SERVER + "test_ignore_drops_silently_even_with_kod",
         SERVER + "test_limited_drops_requests_over_rate"),
    ),
    Guard(
        "server-mac-verified", "forged MACs get nothing (CVE-2015-7871 class)",
        "proto/server.py",
        "                if result is not AuthResult.OK:\n"
        "                    counters.refuse_auth(result)\n"
        "                    return None\n"
        "                key = self.keys.keys[mac.key_id]\n",
        "                key = self.keys.keys.get(mac.key_id)\n",
        (SERVER_AUTH + "test_a_tampered_mac_gets_no_reply_and_is_counted_by_kind",
         SERVER_AUTH + "test_an_unknown_key_gets_no_reply",
         SERVER_AUTH + "test_an_untrusted_key_gets_no_reply"),
    ),
    Guard(
        "server-mssntp-permitted", "restrict mssntp (MS-SNTP signing for Samba)",
        "proto/server.py",
        "                if not flags & acc.MSSNTP:\n",
        "                if False:\n",
        (SERVER_MSSNTP + "test_without_mssntp_in_the_rule_it_gets_nothing_and_is_counted",),
    ),
    Guard(
        "auth-trusted-key", "trustedkey",
        "proto/auth.py",
        "        if mac.key_id not in self.trusted:\n"
        "            return AuthResult.UNTRUSTED_KEY\n",
        "",
        (AUTH + "test_a_known_but_untrusted_key_is_refused",
         SERVER_AUTH + "test_an_untrusted_key_gets_no_reply"),
    ),
    Guard(
        "auth-digest", "CVE-2015-7871 class",
        "proto/auth.py",
        "    if not hmac.compare_digest(compute_digest(key, message), mac.digest):\n",
        "    if False:\n",
        (AUTH + "test_a_tampered_digest_fails_the_mac",
         SERVER_AUTH + "test_a_tampered_mac_gets_no_reply_and_is_counted_by_kind",
         SOURCE_AUTH + "test_a_tampered_reply_is_refused",
         SYMMETRIC + "test_a_tampered_packet_is_refused"),
    ),
    Guard(
        "auth-key-id", "CVE-2015-7871 class",
        "proto/auth.py",
        "    if mac.key_id != key.key_id:\n"
        "        return AuthResult.WRONG_KEY\n",
        "",
        (AUTH + "test_a_mac_under_another_key_id_is_the_wrong_key_for_an_association",
         SOURCE_AUTH + "test_a_reply_under_another_key_id_is_refused",
         SYMMETRIC + "test_a_packet_under_another_key_is_refused"),
    ),
    Guard(
        "auth-crypto-nak", "CVE-2015-7871",
        "proto/auth.py",
        "    if mac.is_crypto_nak:\n"
        "        return AuthResult.CRYPTO_NAK\n"
        "    if mac.key_id != key.key_id:\n",
        "    if mac.key_id != key.key_id:\n",
        (AUTH + "test_a_crypto_nak_never_authenticates",),
    ),
    Guard(
        "server-rate-limit", "restrict limited",
        "proto/server.py",
        "        if flags & acc.OVER_RATE and flags & acc.LIMITED:\n"
        "            counters.drop(DropReason.RATE_LIMITED)\n"
        "            if flags",
        "        if False:\n"
        "            counters.drop(DropReason.RATE_LIMITED)\n"
        "            if flags",
        (SERVER + "test_limited_drops_requests_over_rate",
         SERVER + "test_limited_with_kod_sends_one_rate_kiss_per_burst"),
    ),
    Guard(
        "access-leaky-bucket", "restrict limited (discard)",
        "proto/access.py",
        "        if interval + 1.0 >= self._rate.minimum and leak + head < limit:\n",
        "        if True:\n",
        (ACCESS + "test_packets_closer_than_minimum_are_over_rate",
         ACCESS + "test_sustained_2s_headway_exceeds_average_eventually",
         SERVER + "test_limited_drops_requests_over_rate"),
    ),
    Guard(
        "server-rate-kod-limited", "restrict kod (no reflection)",
        "proto/server.py",
        "            if flags & acc.KOD and flags & acc.KOD_ALLOWED:\n",
        "            if flags & acc.KOD:\n",
        (SERVER + "test_limited_with_kod_sends_one_rate_kiss_per_burst",),
    ),
    Guard(
        "access-one-kod-per-burst", "restrict kod (no reflection)",
        "proto/access.py",
        "        entry.leak = leak\n"
        "        return flags | OVER_RATE\n",
        "        entry.leak = leak\n"
        "        return flags | OVER_RATE | KOD_ALLOWED\n",
        (ACCESS + "test_only_the_first_excess_packet_of_a_burst_may_get_a_kod",
         SERVER + "test_limited_with_kod_sends_one_rate_kiss_per_burst"),
    ),
    Guard(
        "server-refusal-kod-limited", "restrict kod (no reflection)",
        "proto/server.py",
        "        if flags & acc.KOD and (not flags & acc.OVER_RATE or flags & acc.KOD_ALLOWED):\n",
        "        if flags & acc.KOD:\n",
        (SERVER + "test_refusal_kisses_are_rate_limited_too",),
    ),
    Guard(
        "access-mru-bound", "bounded memory under floods (mru maxmem)",
        "proto/access.py",
        "        if len(mru) >= limits.max_entries or (\n",
        "        if (\n",
        (ACCESS + "test_mru_never_exceeds_its_bound_under_a_flood_of_sources",
         ACCESS + "test_mru_recycles_the_least_recently_seen_source"),
    ),
    Guard(
        "server-control-queue-bound", "bounded memory under floods",
        "proto/server.py",
        "        elif len(self.control_queue) >= CONTROL_QUEUE_LIMIT:\n",
        "        elif False:\n",
        (SERVER + "test_mode_6_queue_is_bounded",),
    ),
    Guard(
        "server-signed-queue-bound", "bounded memory under floods",
        "proto/server.py",
        "            if len(self.signed_queue) >= SIGNED_QUEUE_LIMIT:\n"
        "                counters.drop(DropReason.RATE_LIMITED)\n"
        "                return None\n"
        "            counters.served += 1\n",
        "            counters.served += 1\n",
        (SERVER_AUTH + "test_the_signed_queue_is_bounded",),
    ),
    # --- mode 6: proto/server.py, proto/control.py -----------------------------------------
    Guard(
        "server-noquery", "restrict noquery",
        "proto/server.py",
        "        if not self.control_enabled or flags & acc.IGNORE or flags & acc.NOQUERY:\n",
        "        if not self.control_enabled or flags & acc.IGNORE:\n",
        (SERVER + "test_mode_6_from_a_noquery_source_is_dropped_not_queued",),
    ),
    Guard(
        "control-noquery", "restrict noquery",
        "proto/control.py",
        "        if flags & NOQUERY:\n"
        "            return self._drop(ControlDrop.NOQUERY)\n",
        "",
        (CONTROL + "test_noquery_gets_nothing",),
    ),
    Guard(
        "control-nomodify", "CVE-2015-7850/7851/7703 (restrict nomodify)",
        "proto/control.py",
        "        Opcode.WRITEVAR,\n"
        "        Opcode.WRITECLOCK,\n"
        "        Opcode.SETTRAP,\n"
        "        Opcode.ASYNCMSG,\n"
        "        Opcode.CONFIGURE,\n"
        "        Opcode.SAVECONFIG,\n",
        "        Opcode.SETTRAP,\n"
        "        Opcode.ASYNCMSG,\n",
        (CONTROL + "test_write_opcodes_refused",
         CONTROL_AUTH + "test_a_write_signed_with_the_controlkey_is_still_refused",
         ABUSE + "test_cve_2015_7851_remote_configuration_is_refused"),
    ),
    Guard(
        "control-notrap", "CVE-2016-9310/9311 (restrict notrap)",
        "proto/control.py",
        "        Opcode.SETTRAP,\n"
        "        Opcode.ASYNCMSG,\n"
        "        Opcode.CONFIGURE,\n"
        "        Opcode.SAVECONFIG,\n"
        "        Opcode.UNSETTRAP,\n",
        "        Opcode.CONFIGURE,\n"
        "        Opcode.SAVECONFIG,\n",
        (CONTROL + "test_write_opcodes_refused",
         ABUSE + "test_cve_2016_9310_traps_cannot_be_set"),
    ),
    Guard(
        "control-controlkey", "controlkey",
        "proto/control.py",
        "        if self.control_key is None or mac.key_id != self.control_key:\n"
        "            return False, None\n",
        "",
        (CONTROL_AUTH + "test_a_request_signed_with_another_trusted_key_gets_no_answer",),
    ),
    Guard(
        "control-mac-verifies", "controlkey",
        "proto/control.py",
        "        if self.keys.check(mac, data[:signed_end]) is not AuthResult.OK:\n"
        "            return False, None\n",
        "",
        (CONTROL_AUTH + "test_a_tampered_signed_request_gets_no_answer",),
    ),
    Guard(
        "control-mrulist-nonce", "CVE-2016-7434, mrulist amplification",
        "proto/control.py",
        "        if not self.check_nonce(nonce, address_key, now):\n"
        "            return self._drop(ControlDrop.BAD_NONCE)\n",
        "",
        (CONTROL + "test_mrulist_refused_with_forged_nonce",
         ABUSE + "test_cve_2016_7434_malformed_mrulist_requests_are_refused"),
    ),
    Guard(
        "control-nonce-address", "mrulist amplification (spoofed source)",
        "proto/control.py",
        "        message = stamp.to_bytes(4, \"big\") + _address_bytes(address_key)\n",
        "        message = stamp.to_bytes(4, \"big\")\n",
        (CONTROL + "test_mrulist_refused_with_nonce_for_another_address",),
    ),
    Guard(
        "control-nonce-lifetime", "mrulist amplification (replayed nonce)",
        "proto/control.py",
        "        return age <= NONCE_LIFETIME\n",
        "        return True\n",
        (CONTROL + "test_mrulist_refused_with_expired_nonce",),
    ),
    Guard(
        "control-nomrulist", "restrict nomrulist",
        "proto/control.py",
        "        if op == Opcode.READ_MRU:\n"
        "            if flags & NOMRULIST:\n",
        "        if op == Opcode.READ_MRU:\n"
        "            if False:\n",
        (CONTROL + "test_nomrulist_refuses_mrulist_but_not_readvar",),
    ),
    Guard(
        "control-mru-scan-limit", "mode 6 cost (issue 12): a page reads a bounded share",
        "proto/control.py",
        "        while record is not None and sent < limit and read < MRU_SCAN_LIMIT:\n",
        "        while record is not None and sent < limit:\n",
        (CONTROL_COST + "test_a_filter_that_matches_nothing_reads_at_most_the_scan_limit",),
    ),
    Guard(
        "control-mru-row-limit", "mode 6 cost (issue 12): a page reads a bounded share",
        "proto/control.py",
        "        while record is not None and sent < limit and read < MRU_SCAN_LIMIT:\n",
        "        while record is not None and read < MRU_SCAN_LIMIT:\n",
        (CONTROL_COST + "test_a_page_reads_at_most_its_row_limit_whatever_frags_asks_for",),
    ),
    Guard(
        "control-count", "CVE-2015-7855",
        "proto/control.py",
        "    if header.count > available:\n",
        "    if False:\n",
        (CONTROL + "test_malformed_request_dropped_with_reason",
         ABUSE + "test_cve_2015_7855_mode_6_lengths_and_offsets_are_checked"),
    ),
    Guard(
        "control-offset", "CVE-2015-7855",
        "proto/control.py",
        "    if header.offset:\n",
        "    if False:\n",
        (CONTROL + "test_malformed_request_dropped_with_reason",
         ABUSE + "test_cve_2015_7855_mode_6_lengths_and_offsets_are_checked"),
    ),
    Guard(
        "control-trailer", "CVE-2015-7855",
        "proto/control.py",
        "    if len(trailer) > MAX_TRAILER and any(trailer):\n",
        "    if False:\n",
        (CONTROL + "test_malformed_request_dropped_with_reason",
         ABUSE + "test_cve_2015_7855_mode_6_lengths_and_offsets_are_checked"),
    ),
    Guard(
        "control-length", "CVE-2015-7855",
        "proto/control.py",
        "    if len(datagram) > MAX_REQUEST_LEN:\n",
        "    if False:\n",
        (CONTROL + "test_malformed_request_dropped_with_reason",
         ABUSE + "test_cve_2015_7855_mode_6_lengths_and_offsets_are_checked"),
    ),
    # --- NTS server: proto/nts.py, proto/server.py -----------------------------------------
    Guard(
        "server-nts-authenticator", "RFC 8915 §5.6",
        "proto/nts.py",
        "    plaintext = unseal(c2s, data[: offsets[auth_at]], parsed[0], parsed[1])\n"
        "    if plaintext is None:\n"
        "        return NtsFailure.BAD_AUTHENTICATOR, None\n",
        "    plaintext = unseal(c2s, data[: offsets[auth_at]], parsed[0], parsed[1]) or b\"\"\n",
        (NTS + "test_a_tampered_request_gets_nothing",
         NTS + "test_a_request_signed_with_the_wrong_key_gets_nothing"),
    ),
    Guard(
        # Checked twice: only placeholders as long as a cookie count, and the cookies must
        # fit the request's length. Either alone keeps the reply within the request.
        "server-nts-reply-size", "no amplification (RFC 8915 §5.7)",
        "proto/nts.py",
        "    count = max(0, min(request.cookies_wanted, reply_budget // one))\n",
        "    count = request.cookies_wanted\n",
        (NTS + "test_the_reply_is_never_longer_than_the_request",),
        more=(("    wanted = 1 + sum(1 for n in placeholders if n >= COOKIE_LENGTH)\n",
               "    wanted = 1 + len(placeholders)\n"),),
    ),
    Guard(
        "server-nts-restrict", "restrict ignore/noserve (NTS)",
        "proto/server.py",
        "        if flags & acc.IGNORE or flags & acc.NOSERVE"
        " or (flags & acc.VERSION and h.version != 4):\n",
        "        if False:\n",
        (NTS + "test_restricted_sources_get_no_nts_reply",),
    ),
    # --- NTS-KE (issue 12) ---------------------------------------------------------------------
    Guard(
        "ntske-restrict", "restrict ignore/noserve (NTS-KE)",
        "daemon/ntsketls.py",
        "                                              int(port)) & (IGNORE | NOSERVE):\n",
        "                                              int(port)) & 0:\n",
        (LISTENERS + "test_restrict_ignore_and_noserve_refuse_nts_ke_connections_and_count_them",
         LISTENERS + "test_a_restrict_change_on_sighup_reaches_nts_ke"),
    ),
    Guard(
        "ntske-displace", "NTS-KE slot exhaustion",
        "proto/ntskeslots.py",
        "            evicted = next((s for s in scope if not self._slots[s].answered), None)\n",
        "            evicted = None\n",
        (KE_SLOTS + "test_one_address_beyond_its_limit_displaces_its_own_longest_silent_session",
         KE_SLOTS + "test_a_full_server_displaces_the_longest_silent_session_of_all",
         KE_ABUSE + "test_idle_connections_from_eight_addresses_do_not_starve_legitimate_clients"),
    ),
    Guard(
        "ntske-per-network", "NTS-KE slot exhaustion",
        "proto/ntskeslots.py",
        "        elif len(self._by_network.get(network_key, ())) >= limits.per_network:\n",
        "        elif False:\n",
        (KE_SLOTS + "test_one_network_beyond_its_limit_displaces_its_own_longest_silent_session",
         KE_SLOTS + "test_an_ipv6_64_is_one_network",
         KE_SLOTS + "test_other_networks_are_served_while_one_network_holds_its_share"),
    ),
    Guard(
        "ntske-heard", "NTS-KE slot exhaustion (handshake flood)",
        "proto/ntskeslots.py",
        "            self._slots.move_to_end(session)\n",
        "            pass\n",
        (KE_SLOTS + "test_a_client_that_keeps_talking_outlasts_silent_ones_opened_after_it",),
    ),
    Guard(
        "ntske-min-silence", "NTS-KE slot exhaustion (handshake flood)",
        "proto/ntskeslots.py",
        "            if evicted is None or now - self._slots[evicted].heard_at < patience:\n",
        "            if evicted is None:\n",
        (KE_SLOTS + "test_across_networks_a_session_heard_within_min_silence_is_not_displaced",),
    ),
    # --- files and configuration ------------------------------------------------------------
    Guard(
        "pidfile-create-no-follow", "CVE-2020-14367 class",
        "daemon/pidfile.py",
        "_CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC\n",
        "_CREATE_FLAGS = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC\n",
        (PIDFILE + "test_acquire_refuses_symlink_and_leaves_its_target_alone",
         PIDFILE + "test_acquire_refuses_dangling_symlink_without_creating_its_target",
         FILES + "test_cve_2020_14367_pidfile_symlink_is_never_followed"),
    ),
    Guard(
        "pidfile-read-no-follow", "CVE-2020-14367 class",
        "daemon/pidfile.py",
        "_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK\n",
        "_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK\n",
        (PIDFILE + "test_read_pidfile_refuses_symlink",
         PIDFILE + "test_inspect_symlink_is_never_followed",
         FILES + "test_cve_2020_14367_pidfile_symlink_is_never_followed"),
    ),
    Guard(
        "keys-length", "CVE-2015-7854",
        "config/keys.py",
        "        if len(secret) > MAX_KEY_BYTES:\n",
        "        if False:\n",
        (KEYS + "test_key_longer_than_64_bytes_is_an_error",
         FILES + "test_cve_2015_7854_an_overlong_key_is_a_config_error_not_a_crash"),
    ),
    Guard(
        "config-mode7", "CVE-2013-5211",
        "config/system.py",
        "        if enable and name == \"mode7\":\n",
        "        if False:\n",
        (FILES + "test_enable_mode7_is_refused",),
    ),
    Guard(
        "config-peer-needs-key", "CVE-2016-1549",
        "config/assoc.py",
        "    if kind == \"peer\" and key is None and ctx.line_ok:\n",
        "    if False:\n",
        (FILES + "test_a_peer_without_a_key_never_becomes_a_symmetric_association",),
    ),
    # --- the second hardening round (issue 12, item 5) -------------------------------------
    Guard(
        "client-nts-cookie-size", "hostile NTS-KE server: 1,024-byte cookies",
        "proto/ntske.py",
        "    return 0 < len(body) <= MAX_COOKIE_LENGTH and len(body) % 4 == 0\n",
        "    return len(body) > 0\n",
        ("tests/proto/test_ntske.py::test_the_client_keeps_no_cookie_over_256_bytes_or_of_a_"
         "length_not_a_multiple_of_4",
         NTS + "test_cookies_over_256_bytes_in_an_authentic_reply_are_not_kept_and_are_counted",
         "tests/daemon/test_ntske.py::test_a_server_handing_out_1024_byte_cookies_gets_no_"
         "session"),
    ),
    Guard(
        "config-include-total", "includefile without end",
        "config/parser.py",
        "        if (self.total_lines + lines > MAX_TOTAL_LINES\n"
        "                or self.total_bytes + len(data) > MAX_TOTAL_BYTES):\n",
        "        if False:\n",
        ("tests/config/test_includes.py::test_a_file_included_again_and_again_stops_at_the_"
         "total_line_bound_with_one_error",
         HOLES + "test_two_thousand_includes_of_a_20000_line_file_are_refused_quickly_with_a_"
         "clear_error"),
    ),
    Guard(
        "metrics-room-for-a-scrape", "idle connections hold every metrics slot",
        "daemon/metrics.py",
        "            victim = self._oldest(self.WAITING) or self._oldest(self.ANSWERED)\n",
        "            victim = None\n",
        ("tests/daemon/test_metrics.py::test_an_idle_connection_makes_room_for_a_scrape_when_"
         "all_slots_are_taken",
         HOLES + "test_sixteen_idle_connections_reopened_when_dropped_do_not_keep_scrapes_out"),
    ),
    Guard(
        "safeopen-planted-link", "root follows a link the -u user planted",
        "daemon/safeopen.py",
        "    if link.st_uid != 0:\n        return False\n",
        "    return True\n",
        ("tests/daemon/test_safeopen.py::test_a_link_in_a_directory_another_user_owns_is_not_"
         "followed",
         "tests/daemon/test_safeopen.py::test_in_a_sticky_directory_only_roots_own_links_are_"
         "followed"),
    ),
    Guard(
        "cookie-keys-0600-at-once", "cookie keys readable by others",
        "daemon/ntsketls.py",
        "    elif exposed:\n        save_cookie_keys(path, keys)\n",
        "",
        ("tests/daemon/test_ntske.py::test_cookie_keys_others_can_read_are_written_again_0600_"
         "at_once",
         HOLES + "test_an_nts_private_key_and_cookie_keys_at_0644_are_warned_about_and_the_"
         "keys_rewritten"),
    ),
    Guard(
        "log-hand-over", "the log file cannot be reopened after -u",
        "daemon/logsetup.py",
        "        os.fchown(stream.fileno(), uid, gid)\n",
        "",
        ("tests/daemon/test_logsetup.py::test_hand_over_gives_the_log_file_root_opened_to_the_"
         "service_user",
         HOLES + "test_the_log_file_root_created_before_dash_u_is_reopened_on_sighup"),
    ),
)


# --- running ---------------------------------------------------------------------------------


class TableError(Exception):
    """The table no longer matches the code."""


@dataclass(frozen=True)
class Result:
    guard: Guard
    verdict: str  # KILLED, SURVIVED, ERROR
    detail: str  # for anything but KILLED: which tests did not fail, or what went wrong
    seconds: float


def mutated(guard: Guard, text: str) -> str:
    new = text
    for snippet, replacement in ((guard.snippet, guard.replacement), *guard.more):
        count = text.count(snippet)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            raise TableError(f"{guard.name}: snippet {where} in {PACKAGE}/{guard.file}: "
                             "the guard moved: update the table")
        new = new.replace(snippet, replacement)
    try:
        compile(new, guard.file, "exec")
    except SyntaxError as exc:
        raise TableError(f"{guard.name}: the replacement does not compile: {exc}") from None
    return new


def check_table(guards: Sequence[Guard]) -> None:
    """Every snippet is found exactly once and every replacement compiles; unique names."""
    names = [g.name for g in guards]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise TableError(f"guard names used twice: {sorted(duplicates)}")
    for guard in guards:
        mutated(guard, (REPO / PACKAGE / guard.file).read_text())
        if not guard.tests:
            raise TableError(f"{guard.name}: no tests")


def copy_source(into: Path) -> Path:
    shutil.copytree(REPO / "src", into / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return into / "src"


def node_id(testcase: ET.Element) -> str:
    """pytest's node id from a JUnit testcase (classname is the module path with dots, and
    the class if there is one)."""
    parts = testcase.get("classname", "").split(".")
    name = testcase.get("name", "")
    for split in range(len(parts), 0, -1):
        module = Path(REPO, *parts[:split]).with_suffix(".py")
        if module.exists():
            return "::".join([module.relative_to(REPO).as_posix(), *parts[split:], name])
    return "::".join([*parts, name])


def outcomes(junit: Path) -> dict[str, str]:
    """node id -> passed / failed / error / skipped."""
    found: dict[str, str] = {}
    for testcase in ET.parse(junit).iter("testcase"):
        tags = {child.tag for child in testcase}
        outcome = ("failed" if "failure" in tags else "error" if "error" in tags
                   else "skipped" if "skipped" in tags else "passed")
        found[node_id(testcase)] = outcome
    return found


def run_tests(tests: Iterable[str], src: Path, workdir: Path,
              timeout: float) -> dict[str, str] | str:
    """Outcomes of `tests` run against the code in `src`, or what went wrong."""
    junit = workdir / "junit.xml"
    with contextlib.suppress(FileNotFoundError):
        junit.unlink()
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--junitxml", str(junit), *tests]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session: pytest and any daemon it started
        proc.communicate()
        return f"timed out after {timeout:.0f} s"
    if proc.returncode not in (0, 1) or not junit.exists():
        tail = "\n".join(output.strip().splitlines()[-5:])
        return f"pytest exited {proc.returncode}: {tail}"
    return outcomes(junit)


def verdict_of(tests: Sequence[str], found: dict[str, str]) -> tuple[str, str]:
    """KILLED if every named test failed (a parametrised one: in at least one case)."""
    survivors, problems = [], []
    for test in tests:
        cases = [o for node, o in found.items() if node == test or node.startswith(test + "[")]
        if not cases:
            problems.append(f"{short(test)} not collected")
        elif "failed" in cases:
            continue
        elif "error" in cases or "skipped" in cases:
            problems.append(f"{short(test)} {'errored' if 'error' in cases else 'skipped'}")
        else:
            survivors.append(short(test))
    if problems:
        return "ERROR", "; ".join(problems + [f"{s} passed" for s in survivors])
    if survivors:
        return "SURVIVED", "still passing: " + ", ".join(survivors)
    return "KILLED", ""


def short(test: str) -> str:
    return test.removeprefix("tests/").replace(".py::", "::")


def imports_from(src: Path) -> bool:
    """Whether a child with PYTHONPATH=src imports pyntpd from there (not an installed copy)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    where = subprocess.run([sys.executable, "-c", "import pyntpd; print(pyntpd.__file__)"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    return where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(src)


def baseline(guards: Sequence[Guard], timeout: float) -> str | None:
    """None if every named test passes on the unmutated code, else what did not."""
    tests = list(dict.fromkeys(t for g in guards for t in g.tests))
    with tempfile.TemporaryDirectory(prefix="pyntpd-mutation-") as tmp:
        src = copy_source(Path(tmp))
        if not imports_from(src):
            return "the tests do not import pyntpd from the copy (PYTHONPATH ignored?)"
        found = run_tests(tests, src, Path(tmp), timeout * 3)
    if isinstance(found, str):
        return found
    bad = [f"{short(t)}: {o}" for t, o in found.items() if o != "passed"]
    missing = [short(t) for t in tests
               if not any(n == t or n.startswith(t + "[") for n in found)]
    if bad or missing:
        return "; ".join(bad + [f"{m}: not collected" for m in missing])
    return None


def mutate(guard: Guard, timeout: float) -> Result:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pyntpd-mutation-") as tmp:
        src = copy_source(Path(tmp))
        target = src / "pyntpd" / guard.file
        target.write_text(mutated(guard, target.read_text()))
        found = run_tests(guard.tests, src, Path(tmp), timeout)
    seconds = time.monotonic() - start
    if isinstance(found, str):
        return Result(guard, "ERROR", found, seconds)
    verdict, detail = verdict_of(guard.tests, found)
    return Result(guard, verdict, detail, seconds)


def table(results: Sequence[Result]) -> str:
    lines = ["| guard | advisory | tests that fail without it | result | s |",
             "|---|---|---|---|---|"]
    for r in results:
        tests = "<br>".join(f"`{short(t)}`" for t in r.guard.tests)
        result = r.verdict + (f": {r.detail}" if r.detail else "")
        lines.append(f"| `{r.guard.name}` ({r.guard.file}) | {r.guard.advisory} | {tests} "
                     f"| {result} | {r.seconds:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation.mutate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only these guards")
    parser.add_argument("--list", action="store_true", help="list the guards and exit")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT,
                        help="seconds for one guard's test run (default %(default)s)")
    args = parser.parse_args(argv)

    guards = list(GUARDS)
    if args.names:
        unknown = set(args.names) - {g.name for g in GUARDS}
        if unknown:
            parser.error(f"no such guard: {', '.join(sorted(unknown))}")
        guards = [g for g in GUARDS if g.name in args.names]
    try:
        check_table(guards)
    except TableError as exc:
        print(f"mutate: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for g in guards:
            print(f"{g.name:32} {g.file:20} {g.advisory}")
            for t in g.tests:
                print(f"    {t}")
        return 0

    began = time.monotonic()
    print(f"baseline: {len({t for g in guards for t in g.tests})} tests on unmutated code",
          file=sys.stderr)
    problem = baseline(guards, args.timeout)
    if problem is not None:
        print(f"mutate: the baseline run failed, so no mutation could be judged: {problem}",
              file=sys.stderr)
        return 1
    results = []
    for index, guard in enumerate(guards, 1):
        result = mutate(guard, args.timeout)
        results.append(result)
        print(f"[{index}/{len(guards)}] {guard.name}: {result.verdict} ({result.seconds:.1f} s)"
              + (f" {result.detail}" if result.detail else ""), file=sys.stderr)
    print(table(results))
    counts = {v: sum(r.verdict == v for r in results) for v in ("KILLED", "SURVIVED", "ERROR")}
    print(f"\n{len(results)} guards: {counts['KILLED']} killed, {counts['SURVIVED']} survived, "
          f"{counts['ERROR']} errors; {time.monotonic() - began:.0f} s in all "
          "(baseline included)")
    return 0 if counts["KILLED"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
