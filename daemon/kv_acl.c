/*
 * kv_acl.c — peer credential allow-lists (see kv_acl.h for the invariants).
 *
 * Lists are small (a handful of ids), so membership is a linear scan.
 */
#include "kv_acl.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define ACL_MAX_IDS 1024
#define PEER_GROUPS_STACK 64

enum kind { K_UID, K_GID };

/* One list item: a decimal id or a name to resolve. 0 or -1. */
static int parse_item(enum kind k, const char *item, unsigned long *out, char *err, size_t errlen)
{
	if (*item >= '0' && *item <= '9') {
		char *end = NULL;
		errno = 0;
		unsigned long v = strtoul(item, &end, 10);
		if (errno || *end || v >= (unsigned long)UINT_MAX) {
			snprintf(err, errlen, "'%s' is not a valid %s", item,
			         k == K_UID ? "uid" : "gid");
			return -1;
		}
		*out = v;
		return 0;
	}
	if (k == K_UID) {
		struct passwd *pw = getpwnam(item);
		if (!pw) {
			snprintf(err, errlen, "no user named '%s'", item);
			return -1;
		}
		*out = pw->pw_uid;
	} else {
		struct group *gr = getgrnam(item);
		if (!gr) {
			snprintf(err, errlen, "no group named '%s'", item);
			return -1;
		}
		*out = gr->gr_gid;
	}
	return 0;
}

/* Parse s into a new array of unsigned ids (*ids malloc'ed, NULL when the
 * list is empty). 0 or -1 with err. */
static int parse_list(enum kind k, const char *s, unsigned long **ids, size_t *n, char *err,
                      size_t errlen)
{
	int rc = -1;
	unsigned long *v = NULL;
	size_t nv = 0;
	char *copy = strdup(s);
	*ids = NULL;
	*n = 0;
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	v = calloc(ACL_MAX_IDS, sizeof *v);
	if (!v) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ' || *tok == '\t')
			tok++;
		size_t len = strlen(tok);
		while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
			tok[--len] = '\0';
		if (len == 0) {
			snprintf(err, errlen, "empty item in the list");
			goto out;
		}
		if (nv == ACL_MAX_IDS) {
			snprintf(err, errlen, "more than %d ids", ACL_MAX_IDS);
			goto out;
		}
		if (parse_item(k, tok, &v[nv], err, errlen) < 0)
			goto out;
		nv++;
	}
	if (nv == 0) { /* an empty (or blank) list: no restriction of this kind */
		free(v);
		v = NULL;
	}
	*ids = v;
	*n = nv;
	v = NULL;
	rc = 0;
out:
	free(v);
	free(copy);
	return rc;
}

int kv_acl_set_uids(struct kv_acl *a, const char *s, char *err, size_t errlen)
{
	unsigned long *ids = NULL;
	size_t n = 0;
	if (parse_list(K_UID, s, &ids, &n, err, errlen) < 0)
		return -1;
	uid_t *u = n ? calloc(n, sizeof *u) : NULL;
	if (n && !u) {
		free(ids);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		u[i] = (uid_t)ids[i];
	free(ids);
	free(a->uids);
	a->uids = u;
	a->nuids = n;
	return 0;
}

int kv_acl_set_gids(struct kv_acl *a, const char *s, char *err, size_t errlen)
{
	unsigned long *ids = NULL;
	size_t n = 0;
	if (parse_list(K_GID, s, &ids, &n, err, errlen) < 0)
		return -1;
	gid_t *g = n ? calloc(n, sizeof *g) : NULL;
	if (n && !g) {
		free(ids);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		g[i] = (gid_t)ids[i];
	free(ids);
	free(a->gids);
	a->gids = g;
	a->ngids = n;
	return 0;
}

int kv_acl_active(const struct kv_acl *a)
{
	return a && (a->nuids > 0 || a->ngids > 0);
}

int kv_acl_dup(struct kv_acl *dst, const struct kv_acl *src)
{
	memset(dst, 0, sizeof *dst);
	if (!src)
		return 0;
	if (src->nuids) {
		dst->uids = malloc(src->nuids * sizeof *dst->uids);
		if (!dst->uids)
			return -ENOMEM;
		memcpy(dst->uids, src->uids, src->nuids * sizeof *dst->uids);
		dst->nuids = src->nuids;
	}
	if (src->ngids) {
		dst->gids = malloc(src->ngids * sizeof *dst->gids);
		if (!dst->gids) {
			kv_acl_free(dst);
			return -ENOMEM;
		}
		memcpy(dst->gids, src->gids, src->ngids * sizeof *dst->gids);
		dst->ngids = src->ngids;
	}
	return 0;
}

void kv_acl_free(struct kv_acl *a)
{
	if (!a)
		return;
	free(a->uids);
	free(a->gids);
	memset(a, 0, sizeof *a);
}

static int has_uid(const struct kv_acl *a, uid_t u)
{
	for (size_t i = 0; i < a->nuids; i++)
		if (a->uids[i] == u)
			return 1;
	return 0;
}

static int has_gid(const struct kv_acl *a, gid_t g)
{
	for (size_t i = 0; i < a->ngids; i++)
		if (a->gids[i] == g)
			return 1;
	return 0;
}

/* Is one of the peer's supplementary groups listed? (SO_PEERGROUPS,
 * Linux 4.13+; 0 when the kernel cannot tell.) */
static int peer_groups_listed(const struct kv_acl *a, int fd)
{
#ifdef SO_PEERGROUPS
	gid_t stackbuf[PEER_GROUPS_STACK];
	gid_t *g = stackbuf;
	socklen_t len = sizeof stackbuf;
	int found = 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) < 0) {
		if (errno != ERANGE || len == 0)
			return 0;
		g = malloc(len);
		if (!g || getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) < 0)
			goto out;
	}
	for (size_t i = 0; i < len / sizeof *g && !found; i++)
		found = has_gid(a, g[i]);
out:
	if (g != stackbuf)
		free(g);
	return found;
#else
	(void)a;
	(void)fd;
	return 0;
#endif
}

int kv_acl_check(const struct kv_acl *a, int fd, struct kv_peer *peer)
{
	struct ucred uc;
	socklen_t len = sizeof uc;
	peer->pid = -1;
	peer->uid = (uid_t)-1;
	peer->gid = (gid_t)-1;
	if (!kv_acl_active(a))
		return 1; /* invariant 1: no syscall either */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0 && len == sizeof uc) {
		peer->pid = uc.pid;
		peer->uid = uc.uid;
		peer->gid = uc.gid;
	} else {
		return 0; /* invariant 4 */
	}
	if (has_uid(a, peer->uid) || has_gid(a, peer->gid))
		return 1;
	return a->ngids > 0 && peer_groups_listed(a, fd);
}
