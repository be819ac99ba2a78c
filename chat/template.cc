#include "chat/template.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "chat/builtins.h"
#include "chat/builtins_internal.h"
#include "chat/lexer.h"
#include "chat/parser.h"
#include "common/status.h"

namespace duet::chat::jinja {
namespace {

constexpr absl::string_view kLinePrefix = "chat template line ";

// Variables of one frame. Jinja gives each for-loop iteration and each
// macro call a frame of its own; `if` blocks share their parent's.
class Scope {
 public:
  explicit Scope(const Scope* parent) : parent_(parent) {}
  const Value* Find(const std::string& name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent_) {
      auto it = s->vars_.find(name);
      if (it != s->vars_.end()) return &it->second;
    }
    return nullptr;
  }
  void Set(const std::string& name, Value v) { vars_[name] = std::move(v); }

 private:
  const Scope* parent_;
  absl::flat_hash_map<std::string, Value> vars_;
};

enum class Flow { kNormal, kBreak, kContinue };

absl::Status TypeError(absl::string_view op, const Value& a, const Value& b) {
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(),
                   "' and '", b.TypeName(), "'"));
}

int64_t IntOf(const Value& v) { return v.is_bool() ? v.as_bool() : v.as_int(); }

absl::StatusOr<Value> Arithmetic(const std::string& op, const Value& a,
                                 const Value& b) {
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (a.is_number() && b.is_number()) {
    bool ints = !a.is_float() && !b.is_float();
    if (ints) {
      int64_t x = IntOf(a), y = IntOf(b), r = 0;
      if (op == "+" || op == "-" || op == "*") {
        bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                        : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                    : __builtin_mul_overflow(x, y, &r);
        if (overflow) return absl::InvalidArgumentError("integer overflow");
        return Value(r);
      }
      if (op == "//" || op == "%") {
        if (y == 0) {
          return absl::InvalidArgumentError(
              "integer division or modulo by zero");
        }
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors
          --q;
          m += y;
        }
        return Value(op == "//" ? q : m);
      }
      if (op == "**" && y >= 0) {
        int64_t p = 1;
        for (int64_t i = 0; i < y; ++i) {
          if (__builtin_mul_overflow(p, x, &p)) {
            return absl::InvalidArgumentError("integer overflow");
          }
        }
        return Value(p);
      }
    }
    double x = a.as_double(), y = b.as_double();
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "**") return Value(std::pow(x, y));
    if (y == 0) return absl::InvalidArgumentError("division by zero");
    if (op == "/") return Value(x / y);
    double q = std::floor(x / y);
    if (op == "//") return Value(q);
    return Value(x - q * y);  // %
  }
  if (op == "+" && a.is_string() && b.is_string()) {
    return Value(a.as_string() + b.as_string());
  }
  if (op == "+" && a.is_array() && b.is_array()) {
    Array out = a.as_array();
    out.insert(out.end(), b.as_array().begin(), b.as_array().end());
    return Value(std::move(out));
  }
  if (op == "*" && (a.is_string() || a.is_array()) &&
      (b.is_int() || b.is_bool())) {
    return Arithmetic(op, b, a);
  }
  if (op == "*" && (a.is_int() || a.is_bool()) &&
      (b.is_string() || b.is_array())) {
    int64_t n = std::max<int64_t>(0, IntOf(a));
    if (b.is_string()) {
      if (n * b.as_string().size() > (1u << 28)) {
        return absl::InvalidArgumentError("repeated string too long");
      }
      std::string out;
      for (int64_t i = 0; i < n; ++i) out += b.as_string();
      return Value(std::move(out));
    }
    Array out;
    for (int64_t i = 0; i < n && out.size() < (1u << 20); ++i) {
      out.insert(out.end(), b.as_array().begin(), b.as_array().end());
    }
    return Value(std::move(out));
  }
  return TypeError(op, a, b);
}

class Interpreter {
 public:
  explicit Interpreter(const Scope* root) : root_(root) {}

  absl::StatusOr<Flow> Exec(const Body& body, Scope* scope, std::string* out) {
    for (const auto& stmt : body) {
      absl::StatusOr<Flow> flow = ExecOne(*stmt, scope, out);
      if (!flow.ok()) {
        absl::Status s = flow.status();
        if (absl::StartsWith(s.message(), kLinePrefix)) return s;
        return absl::Status(
            s.code(), absl::StrCat(kLinePrefix, stmt->line, ": ", s.message()));
      }
      if (*flow != Flow::kNormal) return *flow;
    }
    return Flow::kNormal;
  }

 private:
  absl::StatusOr<Flow> ExecOne(const Stmt& s, Scope* scope, std::string* out) {
    switch (s.kind) {
      case Stmt::Kind::kText:
        *out += s.text;
        return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        DUET_ASSIGN_OR_RETURN(Value v, Eval(*s.expr, scope));
        *out += v.Str();
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (const auto& [cond, body] : s.branches) {
          DUET_ASSIGN_OR_RETURN(Value c, Eval(*cond, scope));
          if (c.Truthy()) return Exec(body, scope, out);
        }
        return Exec(s.else_body, scope, out);
      case Stmt::Kind::kFor:
        return ExecFor(s, scope, out);
      case Stmt::Kind::kSet: {
        DUET_ASSIGN_OR_RETURN(Value v, Eval(*s.expr, scope));
        DUET_RETURN_IF_ERROR(Assign(s, std::move(v), scope));
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock: {
        std::string text;
        DUET_RETURN_IF_ERROR(Exec(s.body, scope, &text).status());
        scope->Set(s.targets[0], Value(std::move(text)));
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro:
        scope->Set(s.text, MakeMacro(s));
        return Flow::kNormal;
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
      case Stmt::Kind::kGeneration:
        return Exec(s.body, scope, out);
    }
    return Flow::kNormal;
  }

  absl::Status Unpack(const std::vector<std::string>& targets, Value v,
                      Scope* scope) {
    if (targets.size() == 1) {
      scope->Set(targets[0], std::move(v));
      return absl::OkStatus();
    }
    DUET_ASSIGN_OR_RETURN(Array items, Iterate(v));
    if (items.size() != targets.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot unpack ", items.size(), " values into ",
                       targets.size(), " names"));
    }
    for (size_t i = 0; i < items.size(); ++i) {
      scope->Set(targets[i], std::move(items[i]));
    }
    return absl::OkStatus();
  }

  absl::Status Assign(const Stmt& s, Value v, Scope* scope) {
    if (s.attr.empty()) return Unpack(s.targets, std::move(v), scope);
    const Value* ns = scope->Find(s.targets[0]);
    if (ns == nullptr || !ns->is_namespace()) {
      return absl::InvalidArgumentError(
          "cannot assign attribute on non-namespace object");
    }
    ns->namespace_object().Set(s.attr, std::move(v));
    return absl::OkStatus();
  }

  absl::StatusOr<Flow> ExecFor(const Stmt& s, Scope* scope, std::string* out) {
    DUET_ASSIGN_OR_RETURN(Value seq, Eval(*s.expr, scope));
    DUET_ASSIGN_OR_RETURN(Array items, Iterate(seq));
    if (s.filter) {
      Array kept;
      for (Value& item : items) {
        Scope probe(scope);
        DUET_RETURN_IF_ERROR(Unpack(s.targets, item, &probe));
        DUET_ASSIGN_OR_RETURN(Value keep, Eval(*s.filter, &probe));
        if (keep.Truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return Exec(s.else_body, scope, out);
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Scope iter(scope);
      DUET_RETURN_IF_ERROR(Unpack(s.targets, items[i], &iter));
      Object loop;
      loop.items.reserve(12);
      loop.Set("index0", Value(i));
      loop.Set("index", Value(i + 1));
      loop.Set("revindex", Value(n - i));
      loop.Set("revindex0", Value(n - i - 1));
      loop.Set("first", Value(i == 0));
      loop.Set("last", Value(i == n - 1));
      loop.Set("length", Value(n));
      loop.Set("depth", Value(int64_t{1}));
      loop.Set("depth0", Value(int64_t{0}));
      if (i > 0) loop.Set("previtem", items[i - 1]);
      if (i + 1 < n) loop.Set("nextitem", items[i + 1]);
      loop.Set("cycle",
               Value::MakeCallable(
                   "loop.cycle", [i](CallArgs& a) -> absl::StatusOr<Value> {
                     if (a.positional.empty()) {
                       return absl::InvalidArgumentError(
                           "no items for cycling given");
                     }
                     return a.positional[i % a.positional.size()];
                   }));
      iter.Set("loop", Value(std::move(loop)));
      DUET_ASSIGN_OR_RETURN(Flow flow, Exec(s.body, &iter, out));
      if (flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  Value MakeMacro(const Stmt& s) {
    const Stmt* macro = &s;
    return Value::MakeCallable(
        s.text, [this, macro](CallArgs& a) -> absl::StatusOr<Value> {
          Scope scope(root_);
          if (a.positional.size() > macro->params.size()) {
            return absl::InvalidArgumentError(
                absl::StrCat("macro '", macro->text, "' takes not more than ",
                             macro->params.size(), " argument(s)"));
          }
          for (size_t i = 0; i < macro->params.size(); ++i) {
            const auto& [name, def] = macro->params[i];
            const Value* given = Arg(a, i, name);
            if (given != nullptr) {
              scope.Set(name, *given);
            } else if (def) {
              DUET_ASSIGN_OR_RETURN(Value v, Eval(*def, &scope));
              scope.Set(name, std::move(v));
            } else {
              scope.Set(name, Value::MakeUndefined(
                                  absl::StrCat("'", name, "' is undefined")));
            }
          }
          for (const auto& [k, v] : a.keyword) {
            bool known = false;
            for (const auto& p : macro->params) known = known || p.first == k;
            if (!known) {
              return absl::InvalidArgumentError(
                  absl::StrCat("macro '", macro->text,
                               "' takes no keyword argument '", k, "'"));
            }
          }
          std::string text;
          DUET_RETURN_IF_ERROR(Exec(macro->body, &scope, &text).status());
          return Value(std::move(text));
        });
  }

  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first, Scope* scope) {
    CallArgs args;
    for (size_t i = first; i < e.children.size(); ++i) {
      DUET_ASSIGN_OR_RETURN(Value v, Eval(*e.children[i], scope));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [k, x] : e.kwargs) {
      DUET_ASSIGN_OR_RETURN(Value v, Eval(*x, scope));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  absl::StatusOr<Value> Eval(const Expr& e, Scope* scope) {
    using EK = Expr::Kind;
    switch (e.kind) {
      case EK::kLiteral:
        return e.literal;
      case EK::kName: {
        if (const Value* v = scope->Find(e.name)) return *v;
        if (HasGlobal(e.name)) return MakeGlobal(e.name);
        return Value::MakeUndefined(
            absl::StrCat("'", e.name, "' is undefined"));
      }
      case EK::kList:
      case EK::kTuple: {
        Array out;
        for (const auto& c : e.children) {
          DUET_ASSIGN_OR_RETURN(Value v, Eval(*c, scope));
          out.push_back(std::move(v));
        }
        return Value(std::move(out));
      }
      case EK::kDict: {
        Object o;
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          DUET_ASSIGN_OR_RETURN(Value k, Eval(*e.children[i], scope));
          DUET_ASSIGN_OR_RETURN(Value v, Eval(*e.children[i + 1], scope));
          if (!k.is_string()) {
            return absl::InvalidArgumentError("dict keys must be strings");
          }
          o.Set(k.as_string(), std::move(v));
        }
        return Value(std::move(o));
      }
      case EK::kGetAttr: {
        DUET_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
        if (obj.is_undefined()) return UndefinedError(obj);
        return GetAttr(obj, e.name);
      }
      case EK::kGetItem: {
        DUET_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
        if (obj.is_undefined()) return UndefinedError(obj);
        DUET_ASSIGN_OR_RETURN(Value key, Eval(*e.children[1], scope));
        return GetItem(obj, key);
      }
      case EK::kSlice: {
        DUET_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          if (e.children[i + 1]) {
            DUET_ASSIGN_OR_RETURN(parts[i], Eval(*e.children[i + 1], scope));
          }
        }
        return SliceValue(obj, e.children[1] ? &parts[0] : nullptr,
                          e.children[2] ? &parts[1] : nullptr,
                          e.children[3] ? &parts[2] : nullptr);
      }
      case EK::kCall: {
        DUET_ASSIGN_OR_RETURN(Value fn, Eval(*e.children[0], scope));
        if (fn.is_undefined()) return UndefinedError(fn);
        if (!fn.is_callable()) {
          return absl::InvalidArgumentError(
              absl::StrCat("'", fn.TypeName(), "' is not callable"));
        }
        DUET_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1, scope));
        return fn.as_callable().fn(args);
      }
      case EK::kFilter: {
        DUET_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0], scope));
        DUET_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1, scope));
        return ApplyFilter(e.name, v, args);
      }
      case EK::kTest: {
        DUET_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0], scope));
        DUET_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1, scope));
        DUET_ASSIGN_OR_RETURN(bool r, ApplyTest(e.name, v, args));
        return Value(r != e.negated);
      }
      case EK::kNeg:
      case EK::kPos: {
        DUET_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0], scope));
        if (v.is_undefined()) return UndefinedError(v);
        if (!v.is_number()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "bad operand type for unary ", e.kind == EK::kNeg ? "-" : "+",
              ": '", v.TypeName(), "'"));
        }
        if (e.kind == EK::kPos) return v.is_bool() ? Value(IntOf(v)) : v;
        if (v.is_float()) return Value(-v.as_float());
        return Value(-IntOf(v));
      }
      case EK::kNot: {
        DUET_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0], scope));
        return Value(!v.Truthy());
      }
      case EK::kAnd:
      case EK::kOr: {
        DUET_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0], scope));
        if (a.Truthy() == (e.kind == EK::kOr)) return a;
        return Eval(*e.children[1], scope);
      }
      case EK::kBinary: {
        DUET_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0], scope));
        DUET_ASSIGN_OR_RETURN(Value b, Eval(*e.children[1], scope));
        if (e.name == "~") return Value(a.Str() + b.Str());
        return Arithmetic(e.name, a, b);
      }
      case EK::kCompare:
        return Compare(e, scope);
      case EK::kCondExpr: {
        DUET_ASSIGN_OR_RETURN(Value c, Eval(*e.children[1], scope));
        if (c.Truthy()) return Eval(*e.children[0], scope);
        if (e.children[2]) return Eval(*e.children[2], scope);
        return Value::MakeUndefined(
            "the inline if-expression evaluated to false and no else "
            "section was defined.");
      }
    }
    return absl::InternalError("unknown expression kind");
  }

  absl::StatusOr<Value> Compare(const Expr& e, Scope* scope) {
    DUET_ASSIGN_OR_RETURN(Value left, Eval(*e.children[0], scope));
    for (size_t i = 0; i < e.ops.size(); ++i) {
      DUET_ASSIGN_OR_RETURN(Value right, Eval(*e.children[i + 1], scope));
      const std::string& op = e.ops[i];
      bool r;
      if (op == "==" || op == "!=") {
        r = Equal(left, right) == (op == "==");
      } else if (op == "in" || op == "notin") {
        DUET_ASSIGN_OR_RETURN(bool in, ContainsValue(right, left));
        r = in == (op == "in");
      } else {
        if (left.is_undefined()) return UndefinedError(left);
        if (right.is_undefined()) return UndefinedError(right);
        if (op == "<") {
          DUET_ASSIGN_OR_RETURN(r, Less(left, right));
        } else if (op == ">") {
          DUET_ASSIGN_OR_RETURN(r, Less(right, left));
        } else if (op == "<=") {
          DUET_ASSIGN_OR_RETURN(bool gt, Less(right, left));
          r = !gt;
        } else {
          DUET_ASSIGN_OR_RETURN(bool lt, Less(left, right));
          r = !lt;
        }
      }
      if (!r) return Value(false);
      left = std::move(right);
    }
    return Value(true);
  }

  const Scope* root_;
};

}  // namespace

absl::StatusOr<Template> Template::Parse(absl::string_view source) {
  DUET_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source));
  DUET_ASSIGN_OR_RETURN(Body body, jinja::Parse(tokens));
  return Template(std::make_shared<const Body>(std::move(body)));
}

absl::StatusOr<std::string> Template::Render(const Object& context) const {
  Scope root(nullptr);
  for (const auto& [k, v] : context.items) root.Set(k, v);
  Interpreter interp(&root);
  std::string out;
  DUET_RETURN_IF_ERROR(interp.Exec(*body_, &root, &out).status());
  return out;
}

}  // namespace duet::chat::jinja
