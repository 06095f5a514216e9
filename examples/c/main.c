/* Run a model compiled ahead of time by optc, from C.
 *
 *   optc ../models/tiny_cnn.onnx -O3 -o tiny_cnn.o        # writes tiny_cnn.o, tiny_cnn.h
 *   cc -O2 -pthread -DOPTC_MODEL=tiny_cnn -I. main.c tiny_cnn.o -lm -o tiny_cnn_app
 *   ./tiny_cnn_app                       # runs on zero inputs, prints output 0 as text
 *   ./tiny_cnn_app in0.bin ... out0.bin ...  # raw little-endian inputs in, raw outputs out
 *   OPTC_THREADS=4 ./tiny_cnn_app ...    # parallel nodes on 4 threads
 *
 * OPTC_MODEL is the model's symbol name (the output file's stem unless --name is given);
 * the header OPTC_MODEL.h must be on the include path. Works for any model: sizes come from
 * the header's optc_<name>_input_bytes / optc_<name>_output_bytes tables.
 *
 * Threads: the object computes on the calling thread unless the program hands it a
 * parallel for-loop (optc_<name>_set_parallel_for). With OPTC_THREADS=N (N > 1) this one
 * installs a pool of N - 1 persistent workers that, with the calling thread, claim the
 * items of each parallel loop from a shared counter; when OPTC_THREADS is set it reports on
 * stderr how many loops ran and how many items the workers took. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef OPTC_MODEL
#define OPTC_MODEL tiny_cnn
#endif
#define OPTC_STR_(x) #x
#define OPTC_STR(x) OPTC_STR_(x)
#define OPTC_CAT_(a, b, c) a##b##c
#define OPTC_CAT(a, b, c) OPTC_CAT_(a, b, c)
#define OPTC_SYM(suffix) OPTC_CAT(optc_, OPTC_MODEL, suffix)
#include OPTC_STR(OPTC_MODEL.h)

/* Array sizes (at least 1: the header pads empty tables with a 0 sentinel). */
#define N_IN (sizeof(OPTC_SYM(_input_bytes)) / sizeof(size_t))
#define N_OUT (sizeof(OPTC_SYM(_output_bytes)) / sizeof(size_t))

/* A pool for optc_parallel_for_fn: one loop at a time (`one_loop`); a loop is published
 * under `lock` as a new generation, then the workers that see it and the caller claim items
 * from `next` until it passes n. The caller returns when no worker is still inside the loop
 * (`busy`), which also makes the next loop wait for stragglers of this one. */
struct pool {
    pthread_mutex_t one_loop, lock;
    pthread_cond_t wake, idle;
    optc_task_fn task;
    const void *ctx;
    uint64_t n, generation;
    int busy;
    atomic_uint_fast64_t next;
    unsigned long loops, worker_items;
};

static unsigned long run_items(struct pool *p, optc_task_fn task, const void *ctx, uint64_t n) {
    unsigned long done = 0;
    for (uint64_t i; (i = atomic_fetch_add(&p->next, 1)) < n; done++)
        task(ctx, i);
    return done;
}

static void *pool_worker(void *arg) {
    struct pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->generation == seen)
            pthread_cond_wait(&p->wake, &p->lock);
        seen = p->generation;
        optc_task_fn task = p->task;
        const void *ctx = p->ctx;
        uint64_t n = p->n;
        p->busy++;
        pthread_mutex_unlock(&p->lock);
        unsigned long done = run_items(p, task, ctx, n);
        pthread_mutex_lock(&p->lock);
        p->worker_items += done;
        if (--p->busy == 0)
            pthread_cond_signal(&p->idle);
    }
    return NULL;
}

/* The optc_parallel_for_fn: task(ctx, i) for every i < n, on the pool and this thread. */
static void pool_parallel_for(void *user, optc_task_fn task, const void *ctx, uint64_t n) {
    struct pool *p = user;
    pthread_mutex_lock(&p->one_loop);
    pthread_mutex_lock(&p->lock);
    while (p->busy)
        pthread_cond_wait(&p->idle, &p->lock);
    p->task = task;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->next, 0);
    p->generation++;
    p->loops++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    run_items(p, task, ctx, n);
    pthread_mutex_lock(&p->lock);
    while (p->busy)
        pthread_cond_wait(&p->idle, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->one_loop);
}

/* Start `workers` threads; NULL if one cannot be started. */
static struct pool *pool_start(int workers) {
    static struct pool p = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                            PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};
    for (int w = 0; w < workers; w++) {
        pthread_t t;
        if (pthread_create(&t, NULL, pool_worker, &p) != 0 || pthread_detach(t) != 0)
            return NULL;
    }
    return &p;
}

static int read_file(const char *path, void *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: cannot open %s\n", path);
        return -1;
    }
    size_t got = fread(buf, 1, n, f);
    int extra = fgetc(f);
    fclose(f);
    if (got != n || extra != EOF) {
        fprintf(stderr, "error: %s must hold exactly %zu bytes\n", path, n);
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "error: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    size_t n_in = OPTC_SYM(_num_inputs);
    size_t n_out = OPTC_SYM(_num_outputs);
    int files = argc > 1;
    if (files && (size_t)(argc - 1) != n_in + n_out) {
        fprintf(stderr, "usage: %s [IN0.bin .. OUT0.bin ..] (%zu inputs, %zu outputs)\n",
                argv[0], n_in, n_out);
        return 2;
    }
    const void *inputs[N_IN];
    void *outputs[N_OUT];
    for (size_t i = 0; i < n_in; i++) {
        void *p = calloc(1, OPTC_SYM(_input_bytes)[i] + 1);
        if (!p || (files && read_file(argv[1 + i], p, OPTC_SYM(_input_bytes)[i]) != 0))
            return 1;
        inputs[i] = p;
    }
    for (size_t i = 0; i < n_out; i++) {
        outputs[i] = calloc(1, OPTC_SYM(_output_bytes)[i] + 1);
        if (!outputs[i])
            return 1;
    }
    /* The workspace must be 64-byte aligned; aligned_alloc wants a multiple of 64. */
    size_t ws = ((size_t)OPTC_SYM(_workspace_size)() + 63) / 64 * 64;
    void *workspace = aligned_alloc(64, ws ? ws : 64);
    if (!workspace)
        return 1;
    const char *threads = getenv("OPTC_THREADS");
    struct pool *pool = NULL;
    if (threads && atoi(threads) > 1) {
        pool = pool_start(atoi(threads) - 1);
        if (!pool) {
            fprintf(stderr, "error: cannot start %d threads\n", atoi(threads) - 1);
            return 1;
        }
        OPTC_SYM(_set_parallel_for)(pool_parallel_for, pool);
    }
    int32_t status = OPTC_SYM(_run)(inputs, outputs, workspace);
    if (threads) {
        unsigned long loops = 0, worker_items = 0;
        if (pool) {
            pthread_mutex_lock(&pool->lock);
            loops = pool->loops;
            worker_items = pool->worker_items;
            pthread_mutex_unlock(&pool->lock);
        }
        fprintf(stderr, "optc: %lu parallel loops on the pool, %lu items on its workers\n",
                loops, worker_items);
    }
    if (status != 0) {
        size_t k = (size_t)(status >> 8) - 1;
        size_t code = (size_t)(status & 0xff);
        const char *what = code < OPTC_SYM(_num_error_messages) ? OPTC_SYM(_error_messages)[code]
                                                               : "runtime error";
        fprintf(stderr, "error: node %s: %s\n",
                k < OPTC_SYM(_num_kernels) ? OPTC_SYM(_kernel_names)[k] : "?", what);
        return 1;
    }
    if (files) {
        for (size_t i = 0; i < n_out; i++)
            if (write_file(argv[1 + n_in + i], outputs[i], OPTC_SYM(_output_bytes)[i]) != 0)
                return 1;
    } else {
        printf("%s:", n_out > 0 ? OPTC_SYM(_output_names)[0] : "(no outputs)");
        if (n_out > 0 && strcmp(OPTC_SYM(_output_dtypes)[0], "f32") == 0) {
            const float *o = outputs[0];
            for (size_t k = 0; k < OPTC_SYM(_output_bytes)[0] / 4; k++)
                printf(" %.9g", o[k]);
        }
        printf("\n");
    }
    return 0;
}
