/*
 * loadgen: NTPv4 client-request load generator for the pyntpd serving benchmark.
 *
 *   loadgen [options] HOST PORT RATE DURATION
 *     HOST      loopback address only (127.0.0.0/8 or ::1)
 *     RATE      requests per second (paced against CLOCK_MONOTONIC)
 *     DURATION  seconds of sending; replies are then drained for --drain seconds
 *   options:
 *     --sockets N   client sockets, round-robin per batch (default 4)
 *     --batch N     packets per sendmmsg (default 32); 1 = one send() per packet, with the send
 *                   time read just before it (use 1 for latency measurements)
 *     --drain S     seconds to keep receiving after the last send (default 0.2)
 *     --payload HEX send this datagram (e.g. a signed or NTS request, built by bench/serve.py)
 *                   instead of a plain 48-byte request; every copy is the same, so replies are
 *                   matched in order (first unanswered request) rather than by sequence number
 *     --spin-us U   waits shorter than U microseconds spin, longer ones sleep in ppoll()
 *                   (default: always spin; on the 2-vCPU Firecracker VM a ppoll() wake-up is so
 *                   slow that a sleeping generator cannot offer even 150k req/s)
 *     --bind A[,B..] bind client socket i to address i mod n (loopback only; default: unbound,
 *                   the kernel picks the source), so requests come from several sources
 *   hostile traffic (bench/soak.py), off unless --hostile-fraction is given:
 *     --hostile-fraction F  after every request, send hostile datagrams until they number
 *                   F x requests sent: random bytes, truncated, empty and oversized datagrams,
 *                   bad extension fields, bad MACs (key 1 and unknown keys), mode 6 junk,
 *                   mode 7 (monlist), KoD look-alikes, bad versions, other modes, and plain
 *                   requests at a rate no client may use; the kinds take turns
 *     --hostile-from ADDR   first of the consecutive source addresses they come from
 *                   (default 127.2.0.1); --hostile-addrs N of them (default 256, at most 1024)
 *     --seed S      seed of their random contents (default 1)
 *                   Replies to them are counted ("hostile" in the JSON), not matched.
 *
 * Pacing: requests are due at RATE/s from the start; after a stall of the generator itself it
 * catches up by at most 1 ms worth of requests (or two batches), the rest is "skipped", so the
 * server never sees bursts above the offered rate that the generator's own hiccups would cause.
 *
 * Each request is 48 bytes, LI=0 VN=4 mode=3, its transmit timestamp = (NTP seconds at start << 32)
 * | sequence number, so the reply's origin timestamp identifies it.  Times: t1 = CLOCK_REALTIME
 * just before the send call, t4 = the kernel's receive timestamp (SO_TIMESTAMPNS), t2/t3 = the
 * server's receive/transmit timestamps.  delay = (t4 - t1) - (t3 - t2), as NTP computes it.
 *
 * Prints one JSON object on stdout.  Bounded: sends for DURATION, drains for --drain, exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAXSOCK 64
#define MAXPAYLOAD 1024
#define MAXBATCH 256
#define RXBATCH 64
#define RXBUF 512
#define NTP_UNIX_OFFSET 2208988800ULL
#define MAXBIND 64
#define MAXHOSTILE 1024
#define HOSTILE_MAXLEN 2048 /* past pyntpd's 1232-byte limit: "oversized" */

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int64_t now_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = v & 0xff;
        v >>= 8;
    }
}

/* NTP 64-bit timestamp (era 0, fine until 2036) -> Unix ns */
static int64_t ntp_to_unix_ns(uint64_t ts)
{
    uint64_t sec = ts >> 32, frac = ts & 0xffffffffULL;
    int64_t ns = (int64_t)((frac * 1000000000ULL) >> 32);
    return ((int64_t)sec - (int64_t)NTP_UNIX_OFFSET) * 1000000000LL + ns;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(int64_t *v, size_t n, double q)
{
    if (n == 0)
        return -1.0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    if (i >= n)
        i = n - 1;
    return v[i] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen [--sockets N] [--batch N] [--drain S] [--spin-us U] "
                    "[--payload HEX] [--bind ADDR[,ADDR...]] [--hostile-fraction F "
                    "[--hostile-from ADDR] [--hostile-addrs N] [--seed S]] "
                    "HOST PORT RATE DURATION\n");
    exit(2);
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    return 0;
}

static unsigned char payload[MAXPAYLOAD];
static size_t payload_len; /* 0: plain requests numbered by their transmit timestamp */

/* ---- hostile traffic ------------------------------------------------------------------ */

enum hostile_kind {
    H_RANDOM, H_TRUNCATED, H_EMPTY, H_OVERSIZED, H_BAD_EXTENSION, H_BAD_MAC_KEY1,
    H_BAD_MAC_UNKNOWN_KEY, H_MODE6_JUNK, H_MODE7, H_KOD_LOOKALIKE, H_BAD_VERSION,
    H_OTHER_MODE, H_OVER_RATE, H_NKINDS
};
static const char *const hostile_names[H_NKINDS] = {
    "random", "truncated", "empty", "oversized", "bad_extension", "bad_mac_key1",
    "bad_mac_unknown_key", "mode6_junk", "mode7", "kod_lookalike", "bad_version",
    "other_mode", "over_rate"};

static uint64_t rng_state = 1;

static uint64_t rng(void) /* xorshift64*: reproducible, and plenty for junk */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static void fill_random(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(rng() >> 56);
}

/* A plain 48-byte client request with the given first byte and random timestamps. */
static void request_header(unsigned char *p, unsigned char lvm)
{
    memset(p, 0, 48);
    p[0] = lvm;
    p[2] = 6; /* poll */
    p[3] = 0xec; /* precision -20 */
    put_be64(p + 40, rng());
}

/* Builds hostile datagram number `kind` into p; returns its length. */
static size_t hostile_datagram(int kind, unsigned char *p)
{
    size_t n;
    switch (kind) {
    case H_RANDOM:
        n = 1 + rng() % 300;
        fill_random(p, n);
        return n;
    case H_TRUNCATED:
        request_header(p, 0x23);
        return 1 + rng() % 47;
    case H_EMPTY:
        return 0;
    case H_OVERSIZED:
        request_header(p, 0x23);
        n = 1300 + rng() % (HOSTILE_MAXLEN - 1300);
        fill_random(p + 48, n - 48);
        return n;
    case H_BAD_EXTENSION: {
        /* one extension field whose length is zero, odd, too short, or past the datagram */
        static const uint16_t lens[] = {0, 3, 8, 15, 0xfffc};
        request_header(p, 0x23);
        uint16_t type = (uint16_t)rng(), len = lens[rng() % 5];
        p[48] = type >> 8;
        p[49] = type & 0xff;
        p[50] = len >> 8;
        p[51] = len & 0xff;
        fill_random(p + 52, 28);
        return 80;
    }
    case H_BAD_MAC_KEY1: /* key 1 is configured: a digest that does not verify */
        request_header(p, 0x23);
        p[48] = p[49] = p[50] = 0;
        p[51] = 1;
        n = (rng() & 1) ? 16 : 20; /* MD5 / SHA1 (and AES-CMAC) lengths */
        fill_random(p + 52, n);
        return 52 + n;
    case H_BAD_MAC_UNKNOWN_KEY:
        request_header(p, 0x23);
        put_be64(p + 48, rng());
        p[48] = 0; /* key id 1..2^24: not a key the server has */
        p[51] |= 2;
        fill_random(p + 52, 20);
        return 72;
    case H_MODE6_JUNK: {
        /* version 2 mode 6, any opcode, a count and offset that need not fit */
        n = 12 + rng() % 90;
        fill_random(p, n);
        p[0] = (unsigned char)((rng() % 5) << 3 | 6);
        return n;
    }
    case H_MODE7: /* ntpdc MON_GETLIST_1 (the "monlist" amplifier), padded like ntpdc's */
        memset(p, 0, 48);
        p[0] = 0x17;
        p[2] = 3;
        p[3] = 42;
        return (rng() & 1) ? 8 : 48;
    case H_KOD_LOOKALIKE: {
        static const char *const codes[] = {"RATE", "DENY", "RSTR", "NTSN"};
        /* a kiss in server mode, or a "request" dressed as one */
        request_header(p, (rng() & 1) ? 0x24 : 0x23);
        p[1] = 0;
        memcpy(p + 12, codes[rng() % 4], 4);
        return 48;
    }
    case H_BAD_VERSION: {
        static const unsigned char versions[] = {0, 5, 6, 7};
        request_header(p, (unsigned char)(versions[rng() % 4] << 3 | 3));
        return 48;
    }
    case H_OTHER_MODE: {
        static const unsigned char modes[] = {0, 1, 2, 5};
        request_header(p, (unsigned char)(4 << 3 | modes[rng() % 4]));
        return 48;
    }
    default: /* H_OVER_RATE: a good request, from a source that sends far too many */
        request_header(p, 0x23);
        return 48;
    }
}

/* Parses "A,B,..." into addresses of `family`; returns how many, or -1. */
static int parse_addrs(const char *text, int family, struct sockaddr_storage *out, int max)
{
    int n = 0;
    char list[4096]; /* a copy: strtok would cut argv, which ps shows */
    if (strlen(text) >= sizeof list)
        return -1;
    strcpy(list, text);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        if (n >= max)
            return -1;
        memset(&out[n], 0, sizeof out[n]);
        out[n].ss_family = (sa_family_t)family;
        void *where = family == AF_INET
                          ? (void *)&((struct sockaddr_in *)&out[n])->sin_addr
                          : (void *)&((struct sockaddr_in6 *)&out[n])->sin6_addr;
        if (inet_pton(family, tok, where) != 1 || !is_loopback(&out[n]))
            return -1;
        n++;
    }
    return n;
}

static socklen_t addr_len(int family)
{
    return family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

int main(int argc, char **argv)
{
    int nsock = 4, batch = 32;
    double drain = 0.2, spin_s = 1e9; /* default: always spin */
    const char *bind_list = NULL;
    double hostile_fraction = 0;
    const char *hostile_from = "127.2.0.1";
    int hostile_addrs = 256;
    int argi = 1;
    while (argi < argc && strncmp(argv[argi], "--", 2) == 0) {
        if (argi + 1 >= argc)
            usage();
        if (!strcmp(argv[argi], "--sockets"))
            nsock = atoi(argv[argi + 1]);
        else if (!strcmp(argv[argi], "--batch"))
            batch = atoi(argv[argi + 1]);
        else if (!strcmp(argv[argi], "--drain"))
            drain = atof(argv[argi + 1]);
        else if (!strcmp(argv[argi], "--payload")) {
            const char *hex = argv[argi + 1];
            size_t n = strlen(hex);
            if (n % 2 || n / 2 < 48 || n / 2 > MAXPAYLOAD)
                usage();
            for (size_t i = 0; i < n / 2; i++) {
                unsigned v;
                if (sscanf(hex + 2 * i, "%2x", &v) != 1)
                    usage();
                payload[i] = (unsigned char)v;
            }
            payload_len = n / 2;
        }
        else if (!strcmp(argv[argi], "--spin-us"))
            spin_s = atof(argv[argi + 1]) * 1e-6;
        else if (!strcmp(argv[argi], "--bind"))
            bind_list = argv[argi + 1];
        else if (!strcmp(argv[argi], "--hostile-fraction"))
            hostile_fraction = atof(argv[argi + 1]);
        else if (!strcmp(argv[argi], "--hostile-from"))
            hostile_from = argv[argi + 1];
        else if (!strcmp(argv[argi], "--hostile-addrs"))
            hostile_addrs = atoi(argv[argi + 1]);
        else if (!strcmp(argv[argi], "--seed"))
            rng_state = strtoull(argv[argi + 1], NULL, 0) | 1;
        else
            usage();
        argi += 2;
    }
    if (argc - argi != 4)
        usage();
    const char *host = argv[argi], *port = argv[argi + 1];
    double rate = atof(argv[argi + 2]), duration = atof(argv[argi + 3]);
    if (nsock < 1 || nsock > MAXSOCK || batch < 1 || batch > MAXBATCH || rate <= 0 ||
        duration <= 0 || duration > 600 || drain < 0 || drain > 10 || hostile_fraction < 0 ||
        hostile_fraction > 1 || hostile_addrs < 1 || hostile_addrs > MAXHOSTILE) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }

    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        fprintf(stderr, "loadgen: %s: %s\n", host, gai_strerror(gai));
        return 2;
    }
    struct sockaddr_storage dst;
    memcpy(&dst, ai->ai_addr, ai->ai_addrlen);
    socklen_t dstlen = ai->ai_addrlen;
    int family = ai->ai_family;
    freeaddrinfo(ai);
    if (!is_loopback(&dst)) {
        fprintf(stderr, "loadgen: refusing non-loopback target %s\n", host);
        return 2;
    }

    struct sockaddr_storage binds[MAXBIND];
    int nbind = 0;
    if (bind_list && (nbind = parse_addrs(bind_list, family, binds, MAXBIND)) <= 0) {
        fprintf(stderr, "loadgen: --bind wants loopback addresses of the target's family\n");
        return 2;
    }

    int fds[MAXSOCK];
    for (int i = 0; i < nsock; i++) {
        fds[i] = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fds[i] < 0) {
            perror("socket");
            return 1;
        }
        if (nbind && bind(fds[i], (struct sockaddr *)&binds[i % nbind], addr_len(family)) < 0) {
            perror("bind");
            return 1;
        }
        int one = 1, big = 16 << 20;
        setsockopt(fds[i], SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        if (setsockopt(fds[i], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
            setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        if (setsockopt(fds[i], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
            setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        if (connect(fds[i], (struct sockaddr *)&dst, dstlen) < 0) {
            perror("connect");
            return 1;
        }
    }

    /* hostile sockets: one per source address, consecutive from --hostile-from */
    static int hfds[MAXHOSTILE];
    int nhostile = hostile_fraction > 0 ? hostile_addrs : 0;
    if (nhostile) {
        struct sockaddr_in from = {0};
        from.sin_family = AF_INET;
        if (family != AF_INET || inet_pton(AF_INET, hostile_from, &from.sin_addr) != 1) {
            fprintf(stderr, "loadgen: hostile traffic is IPv4 (127.0.0.0/8) only\n");
            return 2;
        }
        uint32_t first = ntohl(from.sin_addr.s_addr);
        if ((first >> 24) != 127 || ((first + (uint32_t)nhostile - 1) >> 24) != 127) {
            fprintf(stderr, "loadgen: --hostile-from/--hostile-addrs leave 127.0.0.0/8\n");
            return 2;
        }
        for (int i = 0; i < nhostile; i++) {
            hfds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            from.sin_addr.s_addr = htonl(first + (uint32_t)i);
            if (hfds[i] < 0 || bind(hfds[i], (struct sockaddr *)&from, sizeof from) < 0 ||
                connect(hfds[i], (struct sockaddr *)&dst, dstlen) < 0) {
                perror("hostile socket");
                return 1;
            }
        }
    }
    static unsigned char hbuf[HOSTILE_MAXLEN];
    size_t hostile_sent = 0, hostile_errors = 0, hostile_replies = 0, hostile_kods = 0;
    size_t hostile_by_kind[H_NKINDS] = {0};
    double next_hostile_drain = 0;

    size_t cap = (size_t)(rate * duration) + MAXBATCH + 16;
    int64_t *t1 = calloc(cap, sizeof *t1);      /* send time, Unix ns */
    int64_t *delay = malloc(cap * sizeof *delay); /* (t4-t1)-(t3-t2), ns */
    int64_t *rtt = malloc(cap * sizeof *rtt);
    int64_t *proc = malloc(cap * sizeof *proc);
    unsigned char *got = calloc(cap, 1);
    if (!t1 || !delay || !rtt || !proc || !got) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }

    uint64_t base = ((uint64_t)time(NULL) + NTP_UNIX_OFFSET) << 32;
    static unsigned char txbuf[MAXBATCH][MAXPAYLOAD];
    size_t txlen = payload_len ? payload_len : 48;
    uint64_t fixed_xmt = payload_len ? get_be64(payload + 40) : 0;
    struct mmsghdr txmsg[MAXBATCH];
    struct iovec txiov[MAXBATCH];
    memset(txbuf, 0, sizeof txbuf);
    memset(txmsg, 0, sizeof txmsg);
    for (int i = 0; i < MAXBATCH; i++) {
        txbuf[i][0] = (0 << 6) | (4 << 3) | 3;
        if (payload_len)
            memcpy(txbuf[i], payload, payload_len);
        txiov[i].iov_base = txbuf[i];
        txiov[i].iov_len = txlen;
        txmsg[i].msg_hdr.msg_iov = &txiov[i];
        txmsg[i].msg_hdr.msg_iovlen = 1;
    }

    static unsigned char rxbuf[RXBATCH][RXBUF];
    static char rxctl[RXBATCH][256];
    struct mmsghdr rxmsg[RXBATCH];
    struct iovec rxiov[RXBATCH];

    size_t sent = 0, received = 0, dup = 0, unmatched = 0, invalid = 0, nostamp = 0;
    size_t send_errors = 0, nlat = 0, skipped = 0, invalid_short = 0, with_trailer = 0;
    struct pollfd pfds[MAXSOCK];
    for (int i = 0; i < nsock; i++) {
        pfds[i].fd = fds[i];
        pfds[i].events = POLLIN;
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake-ups on time, not 50 us late */
    size_t max_burst = (size_t)(rate * 0.001); /* 1 ms worth of requests */
    if (max_burst < 2 * (size_t)batch)
        max_burst = 2 * (size_t)batch;
    int first_stratum = -1, first_leap = -1, first_version = -1;
    int cur = 0;

    double start = now_mono();
    double end_send = start + duration, end_all = end_send + drain;
    double last_send = start;

    for (;;) {
        double now = now_mono();
        if (now >= end_all)
            break;
        /* ---- send what is due ---- */
        if (now < end_send) {
            size_t due_total = (size_t)((now - start) * rate) + 1;
            if (due_total > skipped)
                due_total -= skipped;
            else
                due_total = 0;
            if (due_total > cap - MAXBATCH)
                due_total = cap - MAXBATCH;
            size_t due = due_total > sent ? due_total - sent : 0;
            /* After a stall of this process, do not catch up with a burst faster than the
             * offered rate: skip what is more than max_burst behind (reported as "skipped"). */
            if (due > max_burst) {
                skipped += due - max_burst;
                due = max_burst;
            }
            while (due > 0) {
                int n = due < (size_t)batch ? (int)due : batch;
                int fd = fds[cur];
                cur = (cur + 1) % nsock;
                if (batch == 1) {
                    if (!payload_len)
                        put_be64(txbuf[0] + 40, base | (uint64_t)(sent + 1));
                    int64_t ts = now_real_ns();
                    ssize_t r = send(fd, txbuf[0], txlen, 0);
                    if (r == (ssize_t)txlen) {
                        t1[sent] = ts;
                        sent++;
                    } else {
                        send_errors++;
                        break;
                    }
                } else {
                    for (int i = 0; !payload_len && i < n; i++)
                        put_be64(txbuf[i] + 40, base | (uint64_t)(sent + 1 + i));
                    int64_t ts = now_real_ns();
                    int r = sendmmsg(fd, txmsg, n, 0);
                    if (r <= 0) {
                        send_errors++;
                        break;
                    }
                    for (int i = 0; i < r; i++)
                        t1[sent + i] = ts;
                    sent += r;
                    if (r < n) {
                        send_errors++;
                        break;
                    }
                }
                due -= n;
                if (due > 0 && n == batch)
                    break; /* go receive in between long bursts */
            }
            last_send = now;
            /* hostile datagrams keep pace with the requests: F x sent in all */
            size_t hostile_due = (size_t)((double)sent * hostile_fraction);
            while (nhostile && hostile_sent < hostile_due) {
                int kind = (int)(hostile_sent % H_NKINDS);
                int fd = hfds[rng() % (uint64_t)nhostile]; /* every kind from every source */
                size_t len = hostile_datagram(kind, hbuf);
                if (send(fd, hbuf, len, 0) == (ssize_t)len)
                    hostile_by_kind[kind]++;
                else
                    hostile_errors++;
                hostile_sent++;
            }
        }
        /* replies to hostile sources: only counted, every 10 ms (they are few) */
        if (nhostile && (now >= next_hostile_drain || now >= end_send)) {
            next_hostile_drain = now + 0.01;
            for (int h = 0; h < nhostile; h++) {
                ssize_t r;
                while ((r = recv(hfds[h], rxbuf[0], RXBUF, MSG_DONTWAIT)) >= 0) {
                    hostile_replies++;
                    if (r >= 48 && rxbuf[0][1] == 0)
                        hostile_kods++;
                }
            }
        }
        /* ---- receive everything queued ---- */
        for (int s = 0; s < nsock; s++) {
            for (int round = 0; round < 8; round++) {
                for (int i = 0; i < RXBATCH; i++) {
                    rxiov[i].iov_base = rxbuf[i];
                    rxiov[i].iov_len = RXBUF;
                    memset(&rxmsg[i].msg_hdr, 0, sizeof rxmsg[i].msg_hdr);
                    rxmsg[i].msg_hdr.msg_iov = &rxiov[i];
                    rxmsg[i].msg_hdr.msg_iovlen = 1;
                    rxmsg[i].msg_hdr.msg_control = rxctl[i];
                    rxmsg[i].msg_hdr.msg_controllen = sizeof rxctl[i];
                }
                int r = recvmmsg(fds[s], rxmsg, RXBATCH, MSG_DONTWAIT, NULL);
                if (r <= 0)
                    break;
                for (int i = 0; i < r; i++) {
                    const unsigned char *p = rxbuf[i];
                    if (rxmsg[i].msg_len < 48) {
                        invalid_short++;
                        continue;
                    }
                    uint64_t org = get_be64(p + 24);
                    uint64_t seq;
                    if (payload_len) {
                        /* identical requests: the reply answers the first unanswered one */
                        if (org != fixed_xmt) {
                            unmatched++;
                            continue;
                        }
                        seq = received + 1;
                    } else if ((org & 0xffffffff00000000ULL) != base) {
                        unmatched++;
                        continue;
                    } else {
                        seq = (org & 0xffffffffULL);
                    }
                    if (seq == 0 || seq > sent) {
                        unmatched++;
                        continue;
                    }
                    size_t k = seq - 1;
                    if (got[k]) {
                        dup++;
                        continue;
                    }
                    got[k] = 1;
                    received++;
                    if (rxmsg[i].msg_len > 48)
                        with_trailer++; /* a MAC or NTS extension fields */
                    int leap = p[0] >> 6, vn = (p[0] >> 3) & 7, mode = p[0] & 7;
                    int stratum = p[1];
                    if (first_stratum < 0) {
                        first_stratum = stratum;
                        first_leap = leap;
                        first_version = vn;
                    }
                    if (mode != 4 || stratum == 0 || stratum > 15 || leap == 3) {
                        invalid++; /* unsynchronised or KoD: counted, still timed if mode 4 */
                        if (mode != 4)
                            continue;
                    }
                    int64_t t4 = -1;
                    for (struct cmsghdr *c = CMSG_FIRSTHDR(&rxmsg[i].msg_hdr); c;
                         c = CMSG_NXTHDR(&rxmsg[i].msg_hdr, c)) {
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                            struct timespec ts;
                            memcpy(&ts, CMSG_DATA(c), sizeof ts);
                            t4 = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
                        }
                    }
                    if (t4 < 0) {
                        nostamp++;
                        t4 = now_real_ns();
                    }
                    int64_t t2 = ntp_to_unix_ns(get_be64(p + 32));
                    int64_t t3 = ntp_to_unix_ns(get_be64(p + 40));
                    rtt[nlat] = t4 - t1[k];
                    proc[nlat] = t3 - t2;
                    delay[nlat] = (t4 - t1[k]) - (t3 - t2);
                    nlat++;
                }
                if (r < RXBATCH)
                    break;
            }
        }
        if (now >= end_send && received + unmatched + invalid_short >= sent)
            break; /* everything answered: no need to wait out the drain */
        /* ---- wait until a batch is due or a reply arrives: spin, or sleep in ppoll() if the
         * wait is longer than --spin-us */
        now = now_mono();
        double wake;
        if (now < end_send) {
            double next = start + (double)(sent + skipped + (size_t)batch) / rate;
            wake = next < end_send ? next : end_send;
        } else {
            wake = end_all;
        }
        if (wake - now > spin_s) {
            double dt = wake - now;
            struct timespec to = {(time_t)dt, (long)((dt - (double)(time_t)dt) * 1e9)};
            ppoll(pfds, (nfds_t)nsock, &to, NULL);
        }
    }
    double elapsed_send = (last_send > start ? last_send : end_send) - start;
    if (elapsed_send <= 0)
        elapsed_send = duration;

    qsort(delay, nlat, sizeof *delay, cmp_i64);
    qsort(rtt, nlat, sizeof *rtt, cmp_i64);
    qsort(proc, nlat, sizeof *proc, cmp_i64);

    double loss = sent ? 1.0 - (double)received / (double)sent : 1.0;
    printf("{\"target_rate\": %.0f, \"duration_s\": %.3f, \"sockets\": %d, \"batch\": %d, "
           "\"sent\": %zu, \"received\": %zu, \"loss\": %.6f, \"send_rate\": %.1f, "
           "\"send_errors\": %zu, \"skipped\": %zu, \"duplicates\": %zu, \"unmatched\": %zu, \"invalid\": %zu, "
           "\"no_rx_timestamp\": %zu, \"with_trailer\": %zu, \"stratum\": %d, \"leap\": %d, \"version\": %d, "
           "\"latency\": {\"n\": %zu, \"delay_p50_us\": %.3f, \"delay_p99_us\": %.3f, "
           "\"delay_min_us\": %.3f, \"rtt_p50_us\": %.3f, \"rtt_p99_us\": %.3f, "
           "\"server_t3_t2_p50_us\": %.3f, \"server_t3_t2_p99_us\": %.3f}",
           rate, duration, nsock, batch, sent, received, loss, sent / elapsed_send, send_errors,
           skipped, dup, unmatched, invalid + invalid_short, nostamp, with_trailer, first_stratum, first_leap, first_version, nlat,
           pct_us(delay, nlat, 0.5), pct_us(delay, nlat, 0.99), pct_us(delay, nlat, 0.0),
           pct_us(rtt, nlat, 0.5), pct_us(rtt, nlat, 0.99), pct_us(proc, nlat, 0.5),
           pct_us(proc, nlat, 0.99));
    if (nhostile) {
        printf(", \"hostile\": {\"sent\": %zu, \"send_errors\": %zu, \"replies\": %zu, "
               "\"kod_replies\": %zu, \"addresses\": %d, \"by_kind\": {",
               hostile_sent, hostile_errors, hostile_replies, hostile_kods, nhostile);
        for (int k = 0; k < H_NKINDS; k++)
            printf("%s\"%s\": %zu", k ? ", " : "", hostile_names[k], hostile_by_kind[k]);
        printf("}}");
    }
    printf("}\n");
    for (int i = 0; i < nsock; i++)
        close(fds[i]);
    for (int i = 0; i < nhostile; i++)
        close(hfds[i]);
    free(t1);
    free(delay);
    free(rtt);
    free(proc);
    free(got);
    return 0;
}
