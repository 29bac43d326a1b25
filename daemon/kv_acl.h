/*
 * kv_acl.h — kvd's second gate after the socket's file mode: an optional
 * allow-list of peer uids and gids, checked once per connection from the
 * kernel's SO_PEERCRED (and SO_PEERGROUPS for supplementary groups).
 *
 * Owns: the two id arrays of a struct kv_acl (malloc'ed, released with
 * kv_acl_free(); a struct kv_acl is a value, copied with kv_acl_dup()).
 *
 * Invariants:
 *  1. An empty acl (no uid and no gid listed) lets everyone in: the socket
 *     mode is then the only gate. Otherwise a peer is let in only when its
 *     uid is listed or one of its gids (effective or supplementary) is.
 *  2. uid 0 is not special: root is let in only when listed (or its group).
 *  3. Names are resolved (getpwnam/getgrnam) when a list is parsed, at start
 *     and at SIGHUP, never per connection; the check itself does no I/O
 *     beyond getsockopt.
 *  4. Fail closed: when an acl is active and the credentials cannot be read,
 *     the peer is refused.
 */
#ifndef KV_ACL_H
#define KV_ACL_H

#include <stddef.h>
#include <sys/types.h>

struct kv_acl {
	uid_t *uids;
	size_t nuids;
	gid_t *gids;
	size_t ngids;
};

/* Who is on the other end of a connection (from SO_PEERCRED). */
struct kv_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};

/* Replace a's uid list with the comma-separated list s (numbers or user
 * names; blanks around items are ignored; "" empties the list). Returns 0,
 * or -1 with a reason in err and a unchanged. */
int kv_acl_set_uids(struct kv_acl *a, const char *s, char *err, size_t errlen);
/* Same for gids (numbers or group names). */
int kv_acl_set_gids(struct kv_acl *a, const char *s, char *err, size_t errlen);

/* Non-zero when a restricts anything (invariant 1). a may be NULL. */
int kv_acl_active(const struct kv_acl *a);

/* Deep copy of src into *dst (dst's old arrays are not freed: pass a
 * zeroed or freed struct). src may be NULL (an empty acl). 0 or -ENOMEM. */
int kv_acl_dup(struct kv_acl *dst, const struct kv_acl *src);

/* Free the arrays and zero a. */
void kv_acl_free(struct kv_acl *a);

/* Check the peer of the connected Unix socket fd. Fills *peer when a is
 * active (pid, uid and gid are -1 when unknown). Returns 1 when it is let
 * in, 0 when not (invariants 1, 2, 4). */
int kv_acl_check(const struct kv_acl *a, int fd, struct kv_peer *peer);

#endif /* KV_ACL_H */
