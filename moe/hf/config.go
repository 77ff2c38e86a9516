package hf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/internal/regfile"
	"github.com/gomoe/gomoe/moe"
)

// Config holds the keys of a transformers config.json that shape a model's MoE blocks. Keys
// a model type does not use stay zero.
type Config struct {
	// ModelType is "mixtral", "qwen3_moe", "olmoe" or "deepseek_v3".
	ModelType string `json:"model_type"`
	// HiddenSize is H.
	HiddenSize int `json:"hidden_size"`
	// IntermediateSize is the expert FFN width of Mixtral and OLMoE (the dense MLP's width in
	// Qwen3-MoE and DeepSeek-V3).
	IntermediateSize int `json:"intermediate_size"`
	// MoEIntermediateSize is the routed expert FFN width of Qwen3-MoE and DeepSeek-V3.
	MoEIntermediateSize int `json:"moe_intermediate_size"`
	// NumLocalExperts is E for Mixtral.
	NumLocalExperts int `json:"num_local_experts"`
	// NumExperts is E for Qwen3-MoE and OLMoE.
	NumExperts int `json:"num_experts"`
	// NRoutedExperts is E for DeepSeek-V3.
	NRoutedExperts int `json:"n_routed_experts"`
	// NumExpertsPerTok is K.
	NumExpertsPerTok int `json:"num_experts_per_tok"`
	// NormTopKProb renormalises the K chosen probabilities to sum to 1 (nil: the model's
	// transformers default, false for Qwen3-MoE and OLMoE, true for DeepSeek-V3; an explicit
	// null in config.json is transformers' None, read as false).
	NormTopKProb *bool `json:"norm_topk_prob"`
	// NGroup and TopKGroup are DeepSeek-V3's expert groups and the groups each token keeps
	// (0: transformers' defaults 8 and 4; MoEConfig refuses an explicit 0 or null, which
	// ParseConfig records).
	NGroup    int `json:"n_group"`
	TopKGroup int `json:"topk_group"`
	// RoutedScalingFactor multiplies DeepSeek-V3's routed probs (nil: the default 2.5).
	RoutedScalingFactor *float64 `json:"routed_scaling_factor"`
	// NSharedExperts is DeepSeek-V3's number of shared experts, each MoEIntermediateSize wide
	// (nil: the default 1).
	NSharedExperts *int `json:"n_shared_experts"`
	// HiddenAct is the expert activation; gomoe loads "silu" (or "swish", the same in
	// transformers) SwiGLU experts.
	HiddenAct string `json:"hidden_act"`
	// RouterJitterNoise is Mixtral's training jitter. It is not carried over (see the package
	// documentation).
	RouterJitterNoise float64 `json:"router_jitter_noise"`

	// given records the DeepSeek-V3 keys that ParseConfig found written as null (transformers
	// keeps None, not the default) or, for n_group and topk_group, as 0 (not the default).
	given given
}

// given holds, for the keys whose zero or missing value MoEConfig reads as transformers'
// default, whether config.json wrote them explicitly as null or 0.
type given struct {
	normNull, scaleNull, sharedNull, groupNull, keptNull, groupZero, keptZero bool
	// actNull: "hidden_act": null, transformers' None, on which ACT2FN fails.
	actNull bool
}

// ParseConfig parses the JSON of a config.json (unknown keys are ignored). Keys match exactly,
// as transformers reads them: a key that names one of Config's only when case is ignored
// ("HIDDEN_ACT", "Model_Type") is an error. json.Unmarshal into a Config does the same
// (Config's UnmarshalJSON).
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := c.UnmarshalJSON(data); err != nil {
		return Config{}, err
	}
	return c, nil
}

// plainConfig is Config without its UnmarshalJSON, for the field-by-field decoding.
type plainConfig Config

// UnmarshalJSON is ParseConfig for encoding/json, so that json.Unmarshal into a Config (or a
// struct holding one) checks the keys and records the explicit nulls as ParseConfig does; it
// replaces the whole of c. JSON null leaves c as it is, as encoding/json does for other values.
func (c *Config) UnmarshalJSON(data []byte) error {
	if string(bytes.TrimSpace(data)) == "null" {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return opkit.Wrap("hf: config", err)
	}
	if err := exactKeys(raw); err != nil {
		return opkit.Wrap("hf: config", err)
	}
	var p plainConfig
	if err := json.Unmarshal(data, &p); err != nil {
		return opkit.Wrap("hf: config", err)
	}
	null := func(k string) bool { v, ok := raw[k]; return ok && string(v) == "null" }
	written := func(k string) bool { _, ok := raw[k]; return ok && !null(k) }
	p.given = given{normNull: null("norm_topk_prob"), scaleNull: null("routed_scaling_factor"),
		sharedNull: null("n_shared_experts"), groupNull: null("n_group"), keptNull: null("topk_group"),
		groupZero: written("n_group") && p.NGroup == 0, keptZero: written("topk_group") && p.TopKGroup == 0,
		actNull: null("hidden_act")}
	*c = Config(p)
	return nil
}

// MarshalJSON writes c as config.json keys, so that json.Unmarshal (UnmarshalJSON) gives c
// back: a key whose zero value reads as transformers' default (the DeepSeek-V3 keys, and
// hidden_act) is left out unless config.json wrote it as null (or, for n_group and
// topk_group, as 0), which is written again. (Written as plain fields, a nil
// routed_scaling_factor became an explicit null, which MoEConfig refuses.)
func (c Config) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(plainConfig(c))
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	g := c.given
	set := func(key string, isZero, null, zero bool) {
		switch {
		case !isZero:
		case null:
			m[key] = json.RawMessage("null")
		case zero:
			m[key] = json.RawMessage("0")
		default:
			delete(m, key)
		}
	}
	set("norm_topk_prob", c.NormTopKProb == nil, g.normNull, false)
	set("routed_scaling_factor", c.RoutedScalingFactor == nil, g.scaleNull, false)
	set("n_shared_experts", c.NSharedExperts == nil, g.sharedNull, false)
	set("n_group", c.NGroup == 0, g.groupNull, g.groupZero)
	set("topk_group", c.TopKGroup == 0, g.keptNull, g.keptZero)
	set("hidden_act", c.HiddenAct == "", g.actNull, false)
	return json.Marshal(m)
}

// exactKeys refuses a key of raw that equals a json key of Config only when case is ignored:
// Go's JSON decoder would match it to the field (so "HIDDEN_ACT": "silu" overrode
// "hidden_act": "gelu"), where transformers, reading config.json into a dict, ignores it.
func exactKeys(raw map[string]json.RawMessage) error {
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		for _, k := range keys {
			if k != name && strings.EqualFold(k, name) {
				return fmt.Errorf("key %q: transformers reads %q (keys are case-sensitive)", k, name)
			}
		}
	}
	return nil
}

// maxConfigBytes bounds the config.json ReadConfig reads (transformers' are a few KB).
const maxConfigBytes = 16 << 20

// ReadConfig reads and parses the config.json at path: a regular file of at most 16 MiB (a
// named pipe would block the read, a device such as /dev/zero never end it, and a large file
// by mistake, a checkpoint say, would be read whole).
func ReadConfig(path string) (Config, error) {
	b, err := regfile.ReadFile(path, maxConfigBytes)
	if err != nil {
		return Config{}, opkit.Wrap("hf: config", err)
	}
	return ParseConfig(b)
}

// MoEConfig returns the moe.Config whose layer computes the model's MoE block as
// transformers does (float32, no losses, no jitter: set Dtype, the loss coefficients and
// the capacity on the result as the training run needs):
//
//	mixtral      softmax, top-K, renormalised              → Softmax
//	qwen3_moe    softmax over all E, top-K, renormalised    → Softmax
//	             only with norm_topk_prob                     (PreSoftmax without it)
//	olmoe        as qwen3_moe (norm_topk_prob off by default)
//	deepseek_v3  sigmoid, top-K of sigmoid + correction bias → Sigmoid, ExpertBias,
//	             within the topk_group best of n_group groups  Groups, GroupsKept,
//	             (group score: the sum of its top 2), scores   ScalingFactor,
//	             renormalised, × routed_scaling_factor,        SharedFFN = n_shared·F
//	             plus shared experts
//
// A renormalised softmax over the K chosen of all E probabilities equals gomoe's softmax over
// the K chosen logits, value and gradient, so no option is needed for it. It returns an error
// for what gomoe does not compute the same way: another activation than silu (or swish),
// DeepSeek-V3 without norm_topk_prob and K > 1 (gomoe renormalises sigmoid scores), and
// DeepSeek-V3 groups whose group score would not be a top-2 sum (gomoe sums the top
// K/topk_group; with topk_group = n_group every expert is kept and the groups are dropped);
// and for what transformers' block fails on: a null routed_scaling_factor, n_shared_experts,
// n_group or topk_group, a 0 n_group or topk_group, groups of one expert.
func (c Config) MoEConfig() (moe.Config, error) {
	e := func(format string, args ...any) (moe.Config, error) {
		return moe.Config{}, fmt.Errorf("gomoe: hf: %s config: "+format, append([]any{c.ModelType}, args...)...)
	}
	if c.given.actNull {
		return e("hidden_act is null: transformers' experts cannot look it up (leave the key out for silu)")
	}
	// transformers' ACT2FN maps both "silu" and "swish" to SiLU.
	if c.HiddenAct != "" && c.HiddenAct != "silu" && c.HiddenAct != "swish" {
		return e("hidden_act %q: gomoe loads silu (SwiGLU) experts", c.HiddenAct)
	}
	norm := func(def bool) bool {
		if c.NormTopKProb == nil {
			return def
		}
		return *c.NormTopKProb
	}
	m := moe.Config{Hidden: c.HiddenSize, TopK: c.NumExpertsPerTok, Activation: moe.SwiGLU}
	switch c.ModelType {
	case "mixtral":
		m.Experts, m.FFN = c.NumLocalExperts, c.IntermediateSize
	case "qwen3_moe":
		m.Experts, m.FFN = c.NumExperts, c.MoEIntermediateSize
		m.PreSoftmax = !norm(false)
	case "olmoe":
		m.Experts, m.FFN = c.NumExperts, c.IntermediateSize
		m.PreSoftmax = !norm(false)
	case "deepseek_v3":
		m.Experts, m.FFN = c.NRoutedExperts, c.MoEIntermediateSize
		m.Score, m.ExpertBias = moe.Sigmoid, true
		g := c.given
		switch {
		case g.scaleNull, g.sharedNull, g.groupNull, g.keptNull:
			// transformers keeps the None, and its block fails on it.
			return e("routed_scaling_factor, n_shared_experts, n_group or topk_group is null: transformers' block cannot run with it (leave the key out for the default)")
		case g.groupZero || g.keptZero:
			return e("n_group=%d topk_group=%d: transformers' block cannot route with 0 groups (leave the key out for the default)", c.NGroup, c.TopKGroup)
		}
		normDefault := true
		if g.normNull {
			// transformers keeps None, which its "if self.norm_topk_prob" reads as false.
			normDefault = false
		}
		if !norm(normDefault) && m.TopK > 1 {
			return e("norm_topk_prob false with num_experts_per_tok=%d: gomoe renormalises the sigmoid scores of K > 1 experts", m.TopK)
		}
		if norm(normDefault) && m.TopK == 1 {
			// transformers weighs the one expert by σ/σ = 1 (times the scaling factor); gomoe
			// by its sigmoid score.
			return e("norm_topk_prob true with num_experts_per_tok=1 weighs every token by routed_scaling_factor alone; gomoe weighs one expert by its sigmoid score (set norm_topk_prob false)")
		}
		m.Groups, m.GroupsKept = c.NGroup, c.TopKGroup
		if m.Groups == 0 {
			m.Groups = 8
		}
		if m.GroupsKept == 0 {
			m.GroupsKept = 4
		}
		if m.Groups > 1 && m.GroupsKept == m.Groups && m.Experts%m.Groups == 0 && m.Experts/m.Groups >= 2 {
			// Every group is kept: the group scores choose nothing, and the experts are
			// chosen among all E as without groups.
			m.Groups, m.GroupsKept = 1, 1
		}
		if m.Groups > 1 && m.Experts%m.Groups == 0 && m.Experts/m.Groups < 2 {
			return e("n_group=%d of %d experts: transformers scores a group by its top 2 experts, and fails on groups of one", m.Groups, m.Experts)
		}
		if m.Groups > 1 && (m.GroupsKept < 1 || m.TopK/m.GroupsKept != 2) {
			return e("n_group=%d topk_group=%d num_experts_per_tok=%d: transformers scores a group by its top 2 experts, gomoe by its top num_experts_per_tok/topk_group (here %d)",
				m.Groups, m.GroupsKept, m.TopK, m.TopK/max(1, m.GroupsKept))
		}
		m.ScalingFactor = 2.5
		if c.RoutedScalingFactor != nil {
			if *c.RoutedScalingFactor == 0 {
				// moe.Config reads 0 as 1; transformers would zero every routed output.
				return e("routed_scaling_factor 0 zeroes every routed expert's output; gomoe's layer wants a factor > 0")
			}
			m.ScalingFactor = *c.RoutedScalingFactor
		}
		shared := 1
		if c.NSharedExperts != nil {
			shared = *c.NSharedExperts
		}
		if shared < 0 || (shared > 0 && m.FFN > math.MaxInt/shared) {
			return e("n_shared_experts=%d (of moe_intermediate_size=%d each)", shared, m.FFN)
		}
		m.SharedFFN = shared * m.FFN
	case "":
		return e("no model_type")
	default:
		return e("model_type %q is not one of mixtral, qwen3_moe, olmoe, deepseek_v3", c.ModelType)
	}
	if m.Score == moe.Softmax && m.TopK == 1 && !m.PreSoftmax {
		// A renormalised top-1 weight is always 1: PreSoftmax would weight by the prob.
		return e("num_experts_per_tok=1 with renormalisation weighs every token by 1; gomoe's softmax over one logit has no router gradient")
	}
	if err := m.Validate(); err != nil {
		return moe.Config{}, opkit.Wrap(fmt.Sprintf("hf: %s config", c.ModelType), err)
	}
	return m, nil
}
