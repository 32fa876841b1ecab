/*
 * floodgen: NTP client requests from many spoofed source addresses of 127.0.0.0/8, for the
 * million-source flood (bench/flood.py).
 *
 *   floodgen [options] DST PORT FIRST_SOURCE COUNT
 *     DST           destination address, in 127.0.0.0/8
 *     FIRST_SOURCE  first of COUNT consecutive source addresses, all in 127.0.0.0/8
 *   options:
 *     --rate R      datagrams per second (default 50000), paced against CLOCK_MONOTONIC
 *     --burst K     requests each source sends back to back (default 1; 2 makes the second
 *                   one over the rate limit, so `limited kod` answers it with a RATE kiss)
 *     --batch N     datagrams per sendmmsg (default 64)
 *     --max-seconds S  stop after S seconds even if not done (default 600)
 *
 * Needs root: a raw socket (IPPROTO_RAW, which implies IP_HDRINCL) writes the IPv4 and UDP
 * headers itself, so each datagram can carry its own source address without binding a
 * million addresses.  Every source and the destination are checked to be in 127.0.0.0/8
 * before anything is sent: this tool never puts a datagram on a real network.  The replies
 * go to the spoofed addresses, where nothing listens; the server's counters tell the story.
 *
 * Prints one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAXBATCH 256
#define PKT_LEN (20 + 8 + 48)

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(void)
{
    fprintf(stderr, "usage: floodgen [--rate R] [--burst K] [--batch N] [--max-seconds S] "
                    "DST PORT FIRST_SOURCE COUNT\n");
    exit(2);
}

static int loopback(uint32_t host_order)
{
    return (host_order >> 24) == 127;
}

/* One datagram: IPv4 header (the kernel fills in the checksum and, with id 0, the id),
 * UDP header without checksum (allowed over IPv4), a 48-byte NTPv4 client request. */
static void build(unsigned char *p, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                  uint64_t xmt)
{
    memset(p, 0, PKT_LEN);
    p[0] = 0x45;
    p[2] = PKT_LEN >> 8;
    p[3] = PKT_LEN & 0xff;
    p[8] = 64;          /* TTL */
    p[9] = IPPROTO_UDP; /* protocol */
    uint32_t s = htonl(src), d = htonl(dst);
    memcpy(p + 12, &s, 4);
    memcpy(p + 16, &d, 4);
    unsigned char *u = p + 20;
    u[0] = sport >> 8;
    u[1] = sport & 0xff;
    u[2] = dport >> 8;
    u[3] = dport & 0xff;
    u[4] = (8 + 48) >> 8;
    u[5] = (8 + 48) & 0xff;
    unsigned char *n = u + 8;
    n[0] = 0x23; /* LI 0, VN 4, mode 3 */
    n[2] = 6;
    n[3] = 0xec;
    for (int i = 7; i >= 0; i--) {
        n[40 + i] = xmt & 0xff;
        xmt >>= 8;
    }
}

int main(int argc, char **argv)
{
    double rate = 50000, max_seconds = 600;
    int burst = 1, batch = 64;
    int argi = 1;
    while (argi < argc && strncmp(argv[argi], "--", 2) == 0) {
        if (argi + 1 >= argc)
            usage();
        if (!strcmp(argv[argi], "--rate"))
            rate = atof(argv[argi + 1]);
        else if (!strcmp(argv[argi], "--burst"))
            burst = atoi(argv[argi + 1]);
        else if (!strcmp(argv[argi], "--batch"))
            batch = atoi(argv[argi + 1]);
        else if (!strcmp(argv[argi], "--max-seconds"))
            max_seconds = atof(argv[argi + 1]);
        else
            usage();
        argi += 2;
    }
    if (argc - argi != 4)
        usage();
    struct in_addr dst_in, first_in;
    long port = strtol(argv[argi + 1], NULL, 10);
    long long count = strtoll(argv[argi + 3], NULL, 10);
    if (inet_pton(AF_INET, argv[argi], &dst_in) != 1 ||
        inet_pton(AF_INET, argv[argi + 2], &first_in) != 1 || port < 1 || port > 65535 ||
        count < 1 || rate <= 0 || burst < 1 || burst > 16 || batch < 1 || batch > MAXBATCH ||
        max_seconds <= 0 || max_seconds > 3600)
        usage();
    uint32_t dst = ntohl(dst_in.s_addr), first = ntohl(first_in.s_addr);
    uint64_t last = (uint64_t)first + (uint64_t)count - 1;
    if (!loopback(dst) || !loopback(first) || last > 0xffffffffULL || !loopback((uint32_t)last)) {
        fprintf(stderr, "floodgen: destination and every source must be in 127.0.0.0/8\n");
        return 2;
    }

    int fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    if (fd < 0) {
        perror("floodgen: raw socket (needs root)");
        return 1;
    }
    int big = 16 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);

    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(dst);
    static unsigned char pkts[MAXBATCH][PKT_LEN];
    struct mmsghdr msgs[MAXBATCH];
    struct iovec iov[MAXBATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < MAXBATCH; i++) {
        iov[i].iov_base = pkts[i];
        iov[i].iov_len = PKT_LEN;
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof to;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    uint64_t total = (uint64_t)count * (uint64_t)burst, sent = 0, errors = 0;
    uint64_t seq = 0; /* datagram number: source = first + seq / burst */
    double start = now_mono(), deadline = start + max_seconds;
    int stopped_early = 0;
    while (sent < total) {
        double now = now_mono();
        if (now >= deadline) {
            stopped_early = 1;
            break;
        }
        uint64_t due = (uint64_t)((now - start) * rate) + 1;
        if (due > total)
            due = total;
        if (due <= sent) {
            double wait = (double)(sent + 1) / rate - (now - start);
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        uint64_t n = due - sent;
        if (n > (uint64_t)batch)
            n = (uint64_t)batch;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t k = seq + i;
            uint32_t src = first + (uint32_t)(k / (uint64_t)burst);
            /* a source port per source, above the well-known range and never 123 */
            uint16_t sport = (uint16_t)(1024 + (src * 2654435761u) % 64000u);
            build(pkts[i], src, dst, sport, (uint16_t)port, (k << 8) | 0x5a);
        }
        int r = sendmmsg(fd, msgs, (unsigned)n, 0);
        if (r < 0) {
            if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) {
                errors++;
                continue; /* retried: the same datagrams are rebuilt on the next turn */
            }
            perror("floodgen: sendmmsg");
            return 1;
        }
        sent += (uint64_t)r;
        seq += (uint64_t)r;
    }
    double elapsed = now_mono() - start;
    printf("{\"sources\": %lld, \"burst\": %d, \"sent\": %llu, \"send_errors\": %llu, "
           "\"seconds\": %.3f, \"send_rate\": %.1f, \"target_rate\": %.0f, "
           "\"stopped_early\": %s}\n",
           count, burst, (unsigned long long)sent, (unsigned long long)errors, elapsed,
           elapsed > 0 ? (double)sent / elapsed : 0.0, rate, stopped_early ? "true" : "false");
    close(fd);
    return 0;
}
