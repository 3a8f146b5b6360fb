/*
 * mod_tsgi: run tsgi handlers (TypeScript fetch-style handlers) in Node
 * workers that the Apache parent spawns and supervises, the way mod_wsgi's
 * daemon mode and mod_cgid do. Apache children talk to the workers over a
 * Unix socket with the binary framing in ../PROTOCOL.md (tsgi_proto.c).
 *
 * One file per job, in the order a request meets them:
 *   tsgi_config.c      directives (TsgiDaemon, TsgiDaemonName, ...), per-directory config
 *   tsgi_supervisor.c  parent: the listening socket, spawning, back-off, the reload gate, retiring workers
 *   tsgi_pool.c        child: connections to the workers, pooled per process; framed I/O
 *   tsgi_exchange.c    child: one request's exchange (REQUEST, body, reply) and its relay
 *   tsgi_tunnel.c      child: an accepted WebSocket upgrade, relayed both ways until it ends
 *   mod_tsgi.c         hooks, register_hooks and the module record
 *   tsgi_proto.c       the wire codec (no APR), shared with the tests and the fuzzer
 * This header holds what they share.
 */
#ifndef MOD_TSGI_H
#define MOD_TSGI_H

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#include "apr_thread_mutex.h"
#include "apr_thread_proc.h"

#include <sys/types.h>
#include <sys/uio.h>

#include "tsgi_policy.h"
#include "tsgi_proto.h"

/* build.ts writes tsgi_build.h (the default worker= path) next to the sources. */
#if defined(__has_include)
#if __has_include("tsgi_build.h")
#include "tsgi_build.h"
#endif
#endif
#ifndef TSGI_DEFAULT_WORKER
#define TSGI_DEFAULT_WORKER ""
#endif

#define TSGI_SECRET_LEN 32
/* A worker that dies this soon after its start is logged as a failed start
 * ("could not start"); its restart delay is the back-off's (tsgi_policy.h). */
#define TSGI_QUICK_DEATH apr_time_from_sec(2)
#define TSGI_READ_BUF 65536
#define TSGI_HANDLER_NAME "tsgi"

/* I/O results besides APR_SUCCESS (tsgi_pool.c). */
#define TSGI_IO_EOF APR_EOF
#define TSGI_IO_TIMEOUT APR_TIMEUP
/* The client disconnected while we waited for the worker. */
#define TSGI_IO_CLIENT_GONE APR_ECONNABORTED

extern module AP_MODULE_DECLARE_DATA tsgi_module;

typedef struct tsgi_conn tsgi_conn;
typedef struct tsgi_worker tsgi_worker;

/* Per-process state of one daemon in an Apache child. */
typedef struct {
    apr_thread_mutex_t *mutex;
    tsgi_conn *idle;        /* stack of idle connections */
    int batch;              /* TsgiSchedBatch took effect: no per-exchange switch */
} tsgi_cpool;

/*
 * A daemon's reload gate (tsgi_supervisor.c): a graceful restart keeps the
 * previous generation's ready workers serving until every new worker said
 * ready (LIVE then), or one could not start (FAILED: the new ones are parked,
 * the previous keep serving until the next restart).
 */
#define TSGI_GATE_LIVE 0
#define TSGI_GATE_PENDING 1
#define TSGI_GATE_FAILED 2

/* One TsgiDaemon: its options (config), its workers (parent), its connections (child). */
typedef struct {
    const char *name;
    const char *handler;
    const char *node;
    const char *worker_js;
    const char *user_name;
    const char *group_name;
    const char *socket_dir;
    uid_t uid;
    gid_t gid;
    int processes;
    int max_requests;
    int max_inflight;
    apr_interval_time_t request_timeout;
    apr_interval_time_t queue_timeout;
    apr_interval_time_t connect_timeout;
    apr_interval_time_t graceful_timeout;
    apr_interval_time_t ws_idle_timeout; /* a WebSocket tunnel with no byte either way this long is closed (0: never) */
    apr_off_t max_body;
    apr_off_t max_heap;            /* max-heap: the worker recycles itself beyond this V8 heap (0: never) */
    const char *health_path;       /* health=PATH, metrics=PATH: answered by the worker (issue 12) */
    const char *metrics_path;
    int metrics_public;            /* metrics-public: metrics to every client, not only loopback ones */
    int server_timing;             /* server-timing: the worker adds a Server-Timing header */
    int clear_env;                 /* clear-env: only env= names of Apache's environment */
    apr_array_header_t *env_keep;  /* env=NAME (const char *) */
    server_rec *s;
    /* parent, set in post_config */
    apr_pool_t *pconf;     /* other-child registrations live here (see worker_maintenance) */
    const char *socket_path;
    const char *ops_dir;   /* where the workers share their metrics (metrics=), owned by their user */
    int listen_fd;
    tsgi_worker **workers;
    int gate;              /* TSGI_GATE_*: whether the previous generation's workers still serve (reload) */
    apr_proc_t watcher;    /* the process waiting on the starting workers' status pipes (pid 0: none) */
    pid_t watcher_parent;
    /* child, set in child_init */
    tsgi_cpool *cpool;
} tsgi_daemon;

/* The daemons of one configuration generation, kept as pconf userdata. */
typedef struct {
    apr_array_header_t *list; /* tsgi_daemon* */
    int sched_batch;          /* TsgiSchedBatch: children's threads run as SCHED_BATCH */
} tsgi_registry;

typedef struct {
    tsgi_daemon *content;
    tsgi_daemon *authn;
    tsgi_daemon *authz;
    tsgi_daemon *log;
    int content_set, authn_set, authz_set, log_set;
    int in_location; /* TsgiDaemonName given in a <Location>: no file behind the URL */
    const char *base_path; /* ctx.basePath: that <Location>'s path without a trailing '/'; "" elsewhere */
} tsgi_dir_conf;

/* One connection from a child to a worker, reused for sequential exchanges. */
struct tsgi_conn {
    int fd;
    int goaway;        /* worker is draining: never reuse */
    int used;          /* served at least one exchange */
    int sent;          /* wrote since the last read: a read now would only say EAGAIN */
    int client_fd;     /* client socket to watch for a hang-up, -1 when idle */
    size_t start, end; /* unread bytes in buf */
    struct tsgi_conn *next;
    unsigned char buf[TSGI_READ_BUF];
};

/* One frame read from a worker. */
typedef struct {
    tsgi_frame f;
    unsigned char *payload; /* NULL for BODY: the caller reads the data itself */
    tsgi_msg m;
} tsgi_in;

/* What an exchange with a worker ended in. */
typedef enum {
    TSGI_OUT_RESPONSE, /* the worker's response went to the client */
    TSGI_OUT_DECISION, /* an access phase's DECISION (or a LOG request, sent) */
    TSGI_OUT_STATUS    /* no response: the status to return to Apache */
} tsgi_outcome;

/* tsgi_config.c */
extern const command_rec tsgi_cmds[];
void *tsgi_create_dir_conf(apr_pool_t *p, char *dir);
void *tsgi_merge_dir_conf(apr_pool_t *p, void *basev, void *addv);
tsgi_registry *tsgi_registry_get(apr_pool_t *pconf);

/* tsgi_supervisor.c (parent) */
int tsgi_supervisor_start(apr_pool_t *pconf, server_rec *s);
void tsgi_supervisor_child_init(tsgi_daemon *d);
const unsigned char *tsgi_secret_get(process_rec *proc);

/* tsgi_pool.c (child) */
void tsgi_pool_child_init(apr_pool_t *pchild, tsgi_daemon *d, int batch);
apr_status_t tsgi_conn_acquire(tsgi_daemon *d, request_rec *r, tsgi_conn **out);
void tsgi_conn_release(tsgi_daemon *d, tsgi_conn *c, int reusable);
void tsgi_conn_close(tsgi_conn *c);
void tsgi_conn_abort(tsgi_conn *c, int reason);
apr_status_t tsgi_conn_writev(tsgi_conn *c, struct iovec *iov, int n, apr_time_t deadline);
apr_status_t tsgi_conn_write(tsgi_conn *c, const void *p, size_t len, apr_time_t deadline);
apr_status_t tsgi_conn_read(tsgi_conn *c, unsigned char *dst, size_t n, apr_time_t deadline);
apr_status_t tsgi_read_frame(tsgi_conn *c, apr_pool_t *p, apr_time_t deadline, tsgi_in *in, int *proto_err);

/* tsgi_tunnel.c (child) */
int tsgi_tunnel_possible(request_rec *r);
void tsgi_tunnel_run(request_rec *r, tsgi_daemon *d, tsgi_conn *w, const char *id);

/* tsgi_exchange.c (child) */
tsgi_outcome tsgi_exchange(request_rec *r, tsgi_daemon *d, int phase, int flags, int *status, const char **user);

#endif
