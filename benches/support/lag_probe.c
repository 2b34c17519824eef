/* The start-lag bench's child (benches/start_lag.rs): the first thing it does is read CLOCK_REALTIME, then it
 * appends that instant, in nanoseconds since the epoch, as one decimal line to the file named by its first
 * argument. Built by the bench with `gcc -static -O2`: a static binary has no dynamic loader, no shared
 * libraries to map and no language runtime to start, so the time from exec to the clock read is as small as
 * a process allows, and the lag the bench measures is the scheduler's, not the child's start-up. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
        return 2;
    }
    if (argc < 2) {
        return 2;
    }
    char line[32];
    int n = snprintf(line, sizeof line, "%lld%09ld\n", (long long)now.tv_sec, now.tv_nsec);
    if (n <= 0 || n >= (int)sizeof line) {
        return 2;
    }
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        return 1;
    }
    /* One write(2) with O_APPEND: lines of probes running at once do not interleave. */
    if (write(fd, line, (size_t)n) != n) {
        return 1;
    }
    return close(fd) == 0 ? 0 : 1;
}
