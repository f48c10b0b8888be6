/*
 * The data node: `affinity` on the ip4-unicast arc. Per frame, one call into
 * Rust with the frame's buffers; Rust reads each packet from its buffer,
 * writes its next slot, an exception (the reason, a counter index, and what
 * to do to the buffer) for each packet that is not a plain pass, and for
 * traced packets the trace record. The only decision left in C is VPP's
 * own: whether a forward address has a usable adjacency yet.
 */
#include <vnet/ip/ip4.h>
#include <vnet/ip/format.h>
#include <vnet/feature/feature.h>
#include <vnet/fib/ip4_fib.h>
#include <vnet/dpo/load_balance.h>
#include <vnet/adj/adj.h>
#include <vnet/ip-neighbor/ip_neighbor.h>

#include "affinity.h"

static const char *affinity_match_names[] = {
  [AFFINITY_MATCH_NONE] = "no affinity",
  [AFFINITY_MATCH_FIXED] = "fixed slot",
  [AFFINITY_MATCH_WILDCARD] = "wildcard id",
};

static const char *affinity_verdict_names[] = {
  [AFFINITY_VERDICT_PASS] = "pass",	  [AFFINITY_VERDICT_FORWARD] = "forward",
  [AFFINITY_VERDICT_DROP] = "drop",	  [AFFINITY_VERDICT_PUNT] = "punt",
  [AFFINITY_VERDICT_CONSUMED] = "consumed",
};

static u8 *
format_affinity_tuple (u8 *s, va_list *args)
{
  affinity_tuple_t *t = va_arg (*args, affinity_tuple_t *);
  if (!t->valid)
    return format (s, "(not parsed)");
  return format (s, "%U %U:%u -> %U:%u", format_ip_protocol, t->protocol,
		 format_ip4_address, &t->src_address, t->src_port,
		 format_ip4_address, &t->dst_address, t->dst_port);
}

/* E.g. "affinity: fixed slot 1234 action-set 7 nat -> pass, next
   ip4-lookup", then the 5-tuple before and after. */
static u8 *
format_affinity_trace (u8 *s, va_list *args)
{
  vlib_main_t *vm = va_arg (*args, vlib_main_t *);
  vlib_node_t *node = va_arg (*args, vlib_node_t *);
  affinity_trace_t *t = va_arg (*args, affinity_trace_t *);
  const char *verdict = t->verdict < ARRAY_LEN (affinity_verdict_names) ?
			  affinity_verdict_names[t->verdict] :
			  "?";
  if (t->match == AFFINITY_MATCH_NONE || t->match >= ARRAY_LEN (affinity_match_names))
    s = format (s, "affinity: no affinity");
  else
    s = format (s, "affinity: %s %u action-set %u", affinity_match_names[t->match],
		t->match_id, t->action_set);
  s = format (s, "%s -> %s", t->nat ? " nat" : "", verdict);
  if (t->verdict == AFFINITY_VERDICT_FORWARD)
    s = format (s, " %U", format_ip4_address, &t->forward_address);
  if ((t->verdict == AFFINITY_VERDICT_DROP ||
       t->verdict == AFFINITY_VERDICT_CONSUMED || t->next == AFFINITY_NEXT_DROP) &&
      t->error < AFFINITY_N_ERROR)
    s = format (s, " (%s)", affinity_error_counters[t->error].name);
  if (t->next < vec_len (node->next_nodes))
    s = format (s, ", next %v\n", vlib_get_next_node (vm, node->index, t->next)->name);
  else
    s = format (s, ", next %u\n", t->next);
  s = format (s, "  before %U\n", format_affinity_tuple, &t->before);
  s = format (s, "  after  %U", format_affinity_tuple, &t->after);
  return s;
}

/* Dispatch without translation: route the packet as if its destination
   were the forward address (the next hop), in the FIB the packet would have
   been looked up in, and hand it to ip4-load-balance as ip4-lookup would.
   A forward address on a connected subnet whose neighbour is not yet known
   resolves to the subnet's glean adjacency, which would ARP for the
   packet's own destination: ARP for the forward address instead, rate
   limited, and drop the packet (its own reason) until the neighbour is
   known. Returns the next slot. */
static_always_inline u16
affinity_forward (vlib_main_t *vm, vlib_node_runtime_t *node,
		  vlib_buffer_t *b, u32 forward_address, u32 *unresolved)
{
  static __thread f64 last_probe;
  ip4_address_t nh = { .as_u32 = forward_address };
  u32 rx = vnet_buffer (b)->sw_if_index[VLIB_RX];
  u32 fib_index = vnet_buffer (b)->sw_if_index[VLIB_TX];
  if (fib_index == (u32) ~0)
    fib_index = rx < vec_len (ip4_main.fib_index_by_sw_if_index) ?
		  ip4_main.fib_index_by_sw_if_index[rx] :
		  0;
  u32 lbi = ip4_fib_forwarding_lookup (fib_index, &nh);
  const load_balance_t *lb = load_balance_get (lbi);
  const dpo_id_t *dpo = load_balance_get_bucket_i (lb, 0);
  if (PREDICT_FALSE (dpo->dpoi_type == DPO_ADJACENCY_GLEAN))
    {
      f64 now = vlib_time_now (vm);
      if (now - last_probe > 0.1)
	{
	  last_probe = now;
	  ip46_address_t dst = { .ip4 = nh };
	  ip_neighbor_probe_dst (
	    adj_get (dpo->dpoi_index)->rewrite_header.sw_if_index,
	    vm->thread_index, AF_IP4, &dst);
	}
      b->error = node->errors[AFFINITY_ERROR_DROP_FORWARD_ADDRESS_UNRESOLVED];
      (*unresolved)++;
      return AFFINITY_NEXT_DROP;
    }
  vnet_buffer (b)->ip.adj_index[VLIB_TX] = lbi;
  vnet_buffer (b)->ip.flow_hash = 0;
  return AFFINITY_NEXT_LOAD_BALANCE;
}

VLIB_NODE_FN (affinity_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  u32 *from = vlib_frame_vector_args (frame);
  u32 n = frame->n_vectors, unresolved = 0, held = 0;
  vlib_buffer_t *bufs[VLIB_FRAME_SIZE];
  u16 nexts[VLIB_FRAME_SIZE];
  affinity_exception_t exc[VLIB_FRAME_SIZE];
  affinity_trace_t *traces[VLIB_FRAME_SIZE];
  u32 counts[AFFINITY_N_ERROR];
  int tracing = node->flags & VLIB_NODE_FLAG_TRACE;

  vlib_get_buffers (vm, from, bufs, n);
  if (PREDICT_FALSE (tracing))
    for (u32 i = 0; i < n; i++)
      {
	traces[i] = 0;
	if (!(bufs[i]->flags & VLIB_BUFFER_IS_TRACED))
	  continue;
	traces[i] =
	  vlib_add_trace (vm, node, bufs[i], sizeof (affinity_trace_t));
	/* Zeroed: a record the core does not fill (before it starts, after
	   a panic) reads "no affinity", "(not parsed)", not stale bytes. */
	clib_memset (traces[i], 0, sizeof (affinity_trace_t));
      }

  /* The core reads the buffers itself (affinity_buffer_layout_t) and
     writes every packet's next slot; only packets that need more than that
     come back as exceptions. */
  u32 n_exc =
    affinity_rs_process (vm->thread_index, vlib_time_now (vm), (void *const *) bufs,
			 n, nexts, exc, tracing ? traces : 0, counts);

  for (u32 e = 0; e < clib_min (n_exc, n); e++)
    {
      affinity_exception_t *x = &exc[e];
      vlib_buffer_t *b = bufs[x->index];
      u16 *next = &nexts[x->index];
      switch (*next)
	{
	case AFFINITY_NEXT_FEATURE:
	  /* The core rewrote the packet in place to another length (a
	     SYN-proxy SYN-ACK answering a SYN); the feature arc's next node
	     is taken below, as for every pass. */
	  b->current_length = x->new_len;
	  break;
	case AFFINITY_NEXT_DROP:
	  b->error = node->errors[x->error];
	  /* Held packets and held fragments: released or expired by the
	     timer process (fragments: Worker::poll_fragments). */
	  held += x->error == AFFINITY_ERROR_HELD ||
		  x->error == AFFINITY_ERROR_FRAGMENT_HELD;
	  break;
	case AFFINITY_NEXT_LOOKUP:
	  /* A punt: the service message's IPv4/UDP headers were written in
	     front of the packet. Routed in the default table, from us. */
	  vlib_buffer_advance (b, x->advance);
	  b->current_length = x->new_len;
	  vnet_buffer (b)->sw_if_index[VLIB_TX] = 0;
	  b->flags |= VNET_BUFFER_F_LOCALLY_ORIGINATED;
	  /* The core completed the punted packet's checksum: no offload may
	     touch the message's bytes (they may be signed). */
	  b->flags &= ~VNET_BUFFER_F_OFFLOAD;
	  vnet_buffer (b)->oflags = 0;
	  break;
	case AFFINITY_NEXT_LOAD_BALANCE:
	  b->current_length = x->new_len;
	  *next =
	    affinity_forward (vm, node, b, x->forward_address, &unresolved);
	  break;
	default:
	  /* Not a value Rust writes: dropped by the loop below. */
	  break;
	}
    }
  for (u32 i = 0; i < n; i++)
    if (nexts[i] == AFFINITY_NEXT_FEATURE)
      vnet_feature_next_u16 (&nexts[i], bufs[i]);
    else if (PREDICT_FALSE (nexts[i] >= AFFINITY_N_NEXT))
      {
	/* Not a value Rust writes: drop rather than misroute. */
	nexts[i] = AFFINITY_NEXT_DROP;
	bufs[i]->error = node->errors[AFFINITY_ERROR_DROP_INTERNAL_ERROR];
      }
  if (PREDICT_FALSE (tracing))
    for (u32 i = 0; i < n; i++)
      if (traces[i])
	traces[i]->next = nexts[i];
  vlib_buffer_enqueue_to_next (vm, node, from, nexts, n);
  /* The core's counters grew by counts[] in this frame (less the drops,
     which error-drop counts under b->error). A forward the adjacency
     check dropped was not dispatched: it counts as unresolved only. */
  counts[AFFINITY_ERROR_DISPATCHED_TO_FORWARD_ADDRESS] -=
    clib_min (unresolved, counts[AFFINITY_ERROR_DISPATCHED_TO_FORWARD_ADDRESS]);
  for (u32 e = 0; e < AFFINITY_N_ERROR; e++)
    if (counts[e])
      vlib_node_increment_counter (vm, affinity_node.index, e, counts[e]);
  if (PREDICT_FALSE (unresolved))
    affinity_rs_count (AFFINITY_ERROR_DROP_FORWARD_ADDRESS_UNRESOLVED,
		       unresolved);
  /* A held packet has a deadline the timer process may not know yet; a
     newly marked handshake is reported promptly (Agent::prompt_reports). */
  if (PREDICT_FALSE (held || counts[AFFINITY_ERROR_HANDSHAKE_MARKED]))
    affinity_wake_timers (vm);
  return n;
}

VLIB_REGISTER_NODE (affinity_node) = {
  .name = "affinity",
  .vector_size = sizeof (u32),
  .format_trace = format_affinity_trace,
  .type = VLIB_NODE_TYPE_INTERNAL,
  .n_errors = AFFINITY_N_ERROR,
  .error_counters = affinity_error_counters,
  /* A pass is not a slot: it follows the feature arc. */
  .n_next_nodes = AFFINITY_N_NEXT,
  .next_nodes = {
    [AFFINITY_NEXT_DROP] = "error-drop",
    [AFFINITY_NEXT_LOOKUP] = "ip4-lookup",
    [AFFINITY_NEXT_LOAD_BALANCE] = "ip4-load-balance",
  },
};

VNET_FEATURE_INIT (affinity_feature, static) = {
  .arc_name = "ip4-unicast",
  .node_name = "affinity",
  .runs_before = VNET_FEATURES ("ip4-lookup"),
};
