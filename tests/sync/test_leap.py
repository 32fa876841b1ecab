"""The leap second policy (sync/leap.py): what is announced, when the kernel is armed, which
samples are ignored. Dates are UTC; the leap of 2016-12-31 and a made-up negative one at
the end of June 2027."""

import calendar

from pyntpd.sync.leap import LEAP_WINDOW, LeapList, LeapPolicy
from pyntpd.types import Leap

DAY = 86_400


def at(year, month, day, hour=0, minute=0, second=0):
    return calendar.timegm((year, month, day, hour, minute, second))


JAN_2017 = at(2017, 1, 1)
JUL_2027 = at(2027, 7, 1)
TABLE_2016 = LeapList(((at(2015, 7, 1), 36), (JAN_2017, 37)), expires=at(2017, 6, 28))
NO_LEAP_IN_2016 = LeapList(((at(2015, 7, 1), 36),), expires=at(2017, 6, 28))
DELETE_2027 = LeapList(((JAN_2017, 37), (JUL_2027, 36)), expires=at(2027, 12, 28))


def majority(leap, n=3, agree=2):
    """`n` survivors' votes, `agree` of them announcing `leap`."""
    return [leap] * agree + [Leap.NONE] * (n - agree)


def decide(now, votes=None, table=None, policy=None):
    policy = policy or LeapPolicy()
    policy.set_list(table)
    return policy.decide(now, votes)


def test_a_majority_announcing_on_5_december_is_remembered_but_neither_served_nor_armed():
    now = at(2016, 12, 5, 12)
    d = decide(now, majority(Leap.ADD_SECOND))
    assert (d.wire, d.kernel, d.at) == (Leap.NONE, Leap.NONE, JAN_2017)
    assert d.next_change == at(2016, 12, 31)  # the engine wakes up on the leap's day


def test_a_majority_announcing_on_5_december_is_passed_on_on_31_december_not_before():
    policy = LeapPolicy()
    votes = majority(Leap.ADD_SECOND)
    assert policy.decide(at(2016, 12, 5, 12), votes).wire == Leap.NONE
    assert policy.decide(at(2016, 12, 30, 23, 59, 59), votes).wire == Leap.NONE
    d = policy.decide(at(2016, 12, 31), votes)
    assert (d.wire, d.kernel) == (Leap.ADD_SECOND, Leap.ADD_SECOND)


def test_a_majority_announcing_on_5_december_is_served_li_1_until_the_leap():
    # Remembered from 5 December: served on the 31st even when no source survives then,
    # up to the last instant before midnight, and no longer once the second is inserted.
    policy = LeapPolicy()
    policy.decide(at(2016, 12, 5, 12), majority(Leap.ADD_SECOND))
    assert policy.decide(at(2016, 12, 31, 0, 0, 1), None).wire == Leap.ADD_SECOND
    assert policy.decide(JAN_2017 - 0.001, None).wire == Leap.ADD_SECOND
    d = policy.decide(JAN_2017, None)
    assert (d.wire, d.kernel, d.at) == (Leap.NONE, Leap.NONE, None)


def test_the_kernel_is_armed_only_on_31_december():
    policy = LeapPolicy()
    votes = majority(Leap.ADD_SECOND)
    assert policy.decide(at(2016, 12, 30, 23, 59, 59), votes).kernel == Leap.NONE
    assert policy.decide(at(2016, 12, 31), votes).kernel == Leap.ADD_SECOND
    assert policy.decide(JAN_2017 - 1, votes).kernel == Leap.ADD_SECOND


def test_a_flag_left_over_after_the_leap_announces_nothing():
    # The newest samples were taken before midnight and still say LI=1: in January that
    # would be a leap at the end of January.
    d = decide(JAN_2017 + 300, majority(Leap.ADD_SECOND, agree=3))
    assert (d.wire, d.kernel, d.at) == (Leap.NONE, Leap.NONE, None)


def test_a_minority_announces_nothing():
    now = at(2016, 12, 31, 12)
    d = decide(now, majority(Leap.ADD_SECOND, n=4, agree=2))
    assert (d.wire, d.kernel) == (Leap.NONE, Leap.NONE)


def test_an_announcement_in_november_is_not_believed():
    # LI is about the current month (RFC 5905): LI=1 in November would be a leap at the end
    # of November, which has never been; an upstream announcing weeks early is the likelier.
    now = at(2016, 11, 30, 12)
    d = decide(now, majority(Leap.ADD_SECOND, agree=3))
    assert (d.wire, d.kernel, d.at) == (Leap.NONE, Leap.NONE, None)


def test_without_survivors_the_last_majority_stands_until_its_leap():
    policy = LeapPolicy()
    policy.decide(at(2016, 12, 31, 10), majority(Leap.ADD_SECOND))
    d = policy.decide(at(2016, 12, 31, 23), None)
    assert (d.wire, d.kernel) == (Leap.ADD_SECOND, Leap.ADD_SECOND)
    assert policy.decide(JAN_2017 + 10, None).kernel == Leap.NONE


def test_a_majority_saying_no_leap_withdraws_the_announcement():
    policy = LeapPolicy()
    policy.decide(at(2016, 12, 31, 10), majority(Leap.ADD_SECOND))
    d = policy.decide(at(2016, 12, 31, 11), majority(Leap.NONE))
    assert (d.wire, d.kernel) == (Leap.NONE, Leap.NONE)


def test_a_valid_leapfile_without_the_leap_outranks_the_votes():
    now = at(2016, 12, 31, 12)
    d = decide(now, majority(Leap.ADD_SECOND, agree=3), NO_LEAP_IN_2016)
    assert (d.wire, d.kernel, d.expired) == (Leap.NONE, Leap.NONE, False)


def test_a_valid_leapfile_announces_on_the_leaps_day_only():
    d = decide(at(2016, 11, 30, 23, 59, 59), table=TABLE_2016)
    assert (d.wire, d.at) == (Leap.NONE, None)
    d = decide(at(2016, 12, 1), [], TABLE_2016)  # known from the start of the month ...
    assert (d.wire, d.kernel, d.at) == (Leap.NONE, Leap.NONE, JAN_2017)
    d = decide(at(2016, 12, 30, 23, 59, 59), [], TABLE_2016)  # ... said on its day
    assert (d.wire, d.kernel) == (Leap.NONE, Leap.NONE)
    d = decide(at(2016, 12, 31), majority(Leap.NONE), TABLE_2016)
    assert (d.wire, d.kernel) == (Leap.ADD_SECOND, Leap.ADD_SECOND)


def test_a_negative_leap_is_li_2_and_sta_del_on_30_june_only():
    d = decide(at(2027, 6, 29, 12), None, DELETE_2027)
    assert (d.wire, d.kernel, d.at) == (Leap.NONE, Leap.NONE, JUL_2027)
    d = decide(at(2027, 6, 30, 0, 0, 1), None, DELETE_2027)
    assert (d.wire, d.kernel) == (Leap.DEL_SECOND, Leap.DEL_SECOND)
    d = decide(JUL_2027, None, DELETE_2027)
    assert (d.wire, d.kernel, d.tai_offset) == (Leap.NONE, Leap.NONE, 36)


def test_an_expired_leapfile_does_not_silence_the_votes():
    expired = LeapList(((at(2015, 7, 1), 36),), expires=at(2016, 12, 28))
    now = at(2016, 12, 31, 12)
    d = decide(now, majority(Leap.ADD_SECOND), expired)
    assert (d.wire, d.kernel, d.expired) == (Leap.ADD_SECOND, Leap.ADD_SECOND, True)
    assert d.tai_offset == 36


def test_a_list_without_an_expiry_counts_as_expired():
    d = decide(at(2016, 12, 31), None, LeapList(TABLE_2016.changes))
    assert d.expired and d.wire == Leap.NONE


def test_tai_offset_follows_the_list():
    assert decide(JAN_2017 - 1, table=TABLE_2016).tai_offset == 36
    assert decide(JAN_2017, table=TABLE_2016).tai_offset == 37
    assert decide(at(2015, 6, 30), table=TABLE_2016).tai_offset is None  # before the list


def test_the_decision_says_when_it_changes_next():
    d = decide(at(2016, 11, 20), table=TABLE_2016)
    assert d.next_change == at(2016, 12, 1)  # the leap is known (its window set)
    assert decide(at(2016, 12, 5), table=TABLE_2016).next_change == at(2016, 12, 31)  # said, armed
    assert decide(at(2016, 12, 31, 1), table=TABLE_2016).next_change == JAN_2017  # done


def test_samples_within_the_window_around_an_announced_leap_are_flagged():
    policy = LeapPolicy()
    assert not policy.straddles(JAN_2017 - 1, JAN_2017 + 1)  # nothing announced yet
    policy.decide(at(2016, 12, 31, 12), majority(Leap.ADD_SECOND))
    assert policy.straddles(JAN_2017 - 1.0, JAN_2017 - 0.99)  # 23:59:59 (or :60)
    assert policy.straddles(JAN_2017 - 0.002, JAN_2017 + 0.001)  # across midnight
    assert policy.straddles(JAN_2017 + LEAP_WINDOW - 0.1, JAN_2017 + LEAP_WINDOW)
    assert not policy.straddles(JAN_2017 - LEAP_WINDOW - 1, JAN_2017 - LEAP_WINDOW - 0.5)
    assert not policy.straddles(JAN_2017 + LEAP_WINDOW, JAN_2017 + LEAP_WINDOW + 0.002)


def test_leap_list_next_leap_and_direction():
    assert TABLE_2016.next_leap(at(2016, 7, 1)) == (JAN_2017, Leap.ADD_SECOND)
    assert TABLE_2016.next_leap(JAN_2017) is None
    assert TABLE_2016.next_leap(at(2000, 1, 1)) is None  # the first entry is no leap
    assert DELETE_2027.next_leap(at(2027, 6, 1)) == (JUL_2027, Leap.DEL_SECOND)
