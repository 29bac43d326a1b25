/*
 * kv_sd.h — the two systemd protocols kvd speaks, without libsystemd:
 * sd_notify (READY=1, STATUS=, STOPPING=1, WATCHDOG=1 on $NOTIFY_SOCKET,
 * see sd_notify(3)) and socket activation ($LISTEN_PID/$LISTEN_FDS, see
 * sd_listen_fds(3)). Without systemd every call is a harmless no-op.
 */
#ifndef KV_SD_H
#define KV_SD_H

#include <stdint.h>

/* Send one notification (e.g. "READY=1\nSTATUS=serving"). Returns 1 when
 * sent, 0 when $NOTIFY_SOCKET is unset, -errno on failure. */
int kv_sd_notify(const char *state);
/* printf-style form. */
__attribute__((format(printf, 1, 2))) int kv_sd_notifyf(const char *fmt, ...);

/* The watchdog interval in microseconds from $WATCHDOG_USEC (when
 * $WATCHDOG_PID is unset or ours), else 0. */
uint64_t kv_sd_watchdog_usec(void);

/* Number of sockets passed by systemd (fds 3 .. 3+n-1), 0 when none.
 * Unsets the LISTEN_* variables so children do not inherit them. */
int kv_sd_listen_fds(void);

#endif
