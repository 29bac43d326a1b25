/*
 * kv_listen.h — kvd's listening Unix socket: either its own (path checked,
 * a stale file replaced only after a refused connect, mode set, removed at
 * exit if it is still ours) or one inherited from systemd (socket
 * activation: checked, made non-blocking, and never bound, chmod'ed or
 * unlinked — the file belongs to kvd.socket).
 *
 * Owns: the listening fd and, for a socket it bound itself, the identity
 * (dev, inode) of the file it created. Setup functions fill err[errlen]
 * with one line and return < 0; nothing here prints or exits.
 */
#ifndef KV_LISTEN_H
#define KV_LISTEN_H

#include <stddef.h>
#include <sys/types.h>

struct kv_listener {
	int fd;        /* -1 when closed */
	int inherited; /* from systemd: never unlink anything */
	int owned;     /* we created the file with this dev/ino */
	dev_t dev;
	ino_t ino;
	char path[108]; /* the socket's path ("" when unnamed/abstract) */
};

/* Check a socket path before anything else is done: its length fits
 * sun_path, and no live daemon answers on it. Returns 0 (free), 1 (a
 * stale socket file: nobody listens), or < 0 with a reason in err. */
int kv_listen_check(const char *path, char *err, size_t errlen);

/* Bind and listen on path with the given mode (the file is created with
 * no wider permissions). *l is filled; release with kv_listen_close() and
 * kv_listen_remove(). */
int kv_listen_bind(struct kv_listener *l, const char *path, unsigned mode, char *err,
                   size_t errlen);

/* Adopt fd (socket activation): it must be a listening AF_UNIX stream
 * socket. It is made non-blocking and close-on-exec. */
int kv_listen_adopt(struct kv_listener *l, int fd, char *err, size_t errlen);

/* Close the fd (idempotent). */
void kv_listen_close(struct kv_listener *l);

/* Remove the socket file if we created it and it is still that file. */
void kv_listen_remove(struct kv_listener *l);

#endif /* KV_LISTEN_H */
