package trainutil

import "flag"

// AddFlags registers on fs the command-line flags that set the fields of cfg
// (-experts, -topk, -hidden, -ffn, -act, -capacity, -drop, -aux, -zloss and
// -dense), with cfg's current values as defaults. denseUsage is the help
// text of -dense, which names the example's blocks.
func (cfg *BlockConfig) AddFlags(fs *flag.FlagSet, denseUsage string) {
	fs.IntVar(&cfg.Experts, "experts", cfg.Experts, "number of experts E")
	fs.IntVar(&cfg.TopK, "topk", cfg.TopK, "experts per token K")
	fs.IntVar(&cfg.Hidden, "hidden", cfg.Hidden, "model width H")
	fs.IntVar(&cfg.FFN, "ffn", cfg.FFN, "expert FFN size F")
	fs.StringVar(&cfg.Act, "act", cfg.Act, "expert activation: swiglu or gelu")
	fs.Float64Var(&cfg.Capacity, "capacity", cfg.Capacity, "capacity factor; 0 = dropless")
	fs.StringVar(&cfg.Drop, "drop", cfg.Drop, "drop policy in capacity mode: probs or position")
	fs.Float64Var(&cfg.AuxCoef, "aux", cfg.AuxCoef, "load-balancing loss coefficient")
	fs.Float64Var(&cfg.ZCoef, "zloss", cfg.ZCoef, "router z-loss coefficient")
	fs.BoolVar(&cfg.Dense, "dense", cfg.Dense, denseUsage)
}
