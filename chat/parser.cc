#include "chat/parser.h"

#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "chat/builtins.h"
#include "common/status.h"

namespace duet::chat::jinja {
namespace {

using K = Token::Kind;

absl::Status Error(int line, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat template line ", line, ": ", message));
}

ExprPtr MakeExpr(Expr::Kind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : t_(tokens) {}

  absl::StatusOr<Body> Run() {
    Body body;
    std::string end;
    DUET_RETURN_IF_ERROR(ParseBody({}, &body, &end));
    DUET_RETURN_IF_ERROR(CheckCalls(body));
    return body;
  }

 private:
  const Token& Cur() const { return t_[pos_]; }
  const Token& Peek(size_t n = 1) const {
    return t_[std::min(pos_ + n, t_.size() - 1)];
  }
  bool IsOp(absl::string_view op) const {
    return Cur().kind == K::kOp && Cur().value == op;
  }
  bool IsName(absl::string_view name) const {
    return Cur().kind == K::kName && Cur().value == name;
  }
  bool SkipOp(absl::string_view op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool SkipName(absl::string_view name) {
    if (!IsName(name)) return false;
    ++pos_;
    return true;
  }
  absl::Status Expect(absl::string_view op) {
    if (SkipOp(op)) return absl::OkStatus();
    return Error(Cur().line,
                 absl::StrCat("expected '", op, "', found ", Describe(Cur())));
  }
  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case K::kBlockEnd:
        return "end of statement block";
      case K::kVarEnd:
        return "end of print statement";
      case K::kEof:
        return "end of template";
      case K::kString:
        return "string literal";
      default:
        return absl::StrCat("'", t.value, "'");
    }
  }
  absl::Status ExpectBlockEnd() {
    if (Cur().kind == K::kBlockEnd) {
      ++pos_;
      return absl::OkStatus();
    }
    return Error(Cur().line,
                 absl::StrCat("expected end of statement block, found ",
                              Describe(Cur())));
  }

  // Parses statements until a block tag whose name is in `ends` (consumed
  // up to the tag name; the name is returned in *end), or the end of the
  // template when `ends` is empty.
  absl::Status ParseBody(const std::vector<std::string>& ends, Body* body,
                         std::string* end) {
    while (true) {
      const Token& tok = Cur();
      switch (tok.kind) {
        case K::kEof:
          if (ends.empty()) return absl::OkStatus();
          return Error(tok.line,
                       absl::StrCat("unexpected end of template, expected '",
                                    absl::StrJoin(ends, "' or '"), "'"));
        case K::kText: {
          auto s = std::make_unique<Stmt>();
          s->kind = Stmt::Kind::kText;
          s->line = tok.line;
          s->text = tok.value;
          body->push_back(std::move(s));
          ++pos_;
          break;
        }
        case K::kVarBegin: {
          ++pos_;
          auto s = std::make_unique<Stmt>();
          s->kind = Stmt::Kind::kOutput;
          s->line = tok.line;
          DUET_ASSIGN_OR_RETURN(s->expr, ParseTuple(true));
          if (Cur().kind != K::kVarEnd) {
            return Error(Cur().line,
                         absl::StrCat("expected end of print statement, found ",
                                      Describe(Cur())));
          }
          ++pos_;
          body->push_back(std::move(s));
          break;
        }
        case K::kBlockBegin: {
          ++pos_;
          if (Cur().kind != K::kName) {
            return Error(Cur().line, "expected a tag name after '{%'");
          }
          std::string name = Cur().value;
          for (const std::string& e : ends) {
            if (name == e) {
              ++pos_;
              *end = name;
              return absl::OkStatus();
            }
          }
          DUET_RETURN_IF_ERROR(ParseStatement(body));
          break;
        }
        default:
          return Error(tok.line, absl::StrCat("unexpected ", Describe(tok)));
      }
    }
  }

  absl::Status ParseStatement(Body* body) {
    const Token& tag = Cur();
    int line = tag.line;
    std::string name = tag.value;
    ++pos_;
    auto s = std::make_unique<Stmt>();
    s->line = line;
    std::string end;
    if (name == "if") {
      s->kind = Stmt::Kind::kIf;
      while (true) {
        DUET_ASSIGN_OR_RETURN(ExprPtr cond, ParseTuple(true));
        DUET_RETURN_IF_ERROR(ExpectBlockEnd());
        Body branch;
        DUET_RETURN_IF_ERROR(
            ParseBody({"elif", "else", "endif"}, &branch, &end));
        s->branches.emplace_back(std::move(cond), std::move(branch));
        if (end == "elif") continue;
        if (end == "else") {
          DUET_RETURN_IF_ERROR(ExpectBlockEnd());
          DUET_RETURN_IF_ERROR(ParseBody({"endif"}, &s->else_body, &end));
        }
        break;
      }
    } else if (name == "for") {
      s->kind = Stmt::Kind::kFor;
      DUET_RETURN_IF_ERROR(ParseTargets(&s->targets, /*allow_attr=*/nullptr));
      if (!SkipName("in")) {
        return Error(Cur().line, "expected 'in' in for loop");
      }
      DUET_ASSIGN_OR_RETURN(s->expr, ParseTuple(false));
      if (SkipName("if")) {
        DUET_ASSIGN_OR_RETURN(s->filter, ParseTuple(true));
      }
      if (IsName("recursive")) {
        return Error(Cur().line, "unsupported construct: recursive for loop");
      }
      DUET_RETURN_IF_ERROR(ExpectBlockEnd());
      DUET_RETURN_IF_ERROR(ParseBody({"else", "endfor"}, &s->body, &end));
      if (end == "else") {
        DUET_RETURN_IF_ERROR(ExpectBlockEnd());
        DUET_RETURN_IF_ERROR(ParseBody({"endfor"}, &s->else_body, &end));
      }
    } else if (name == "set") {
      DUET_RETURN_IF_ERROR(ParseTargets(&s->targets, &s->attr));
      if (SkipOp("=")) {
        s->kind = Stmt::Kind::kSet;
        DUET_ASSIGN_OR_RETURN(s->expr, ParseTuple(true));
      } else {
        if (s->targets.size() != 1 || !s->attr.empty()) {
          return Error(line, "a block set assigns exactly one name");
        }
        if (IsOp("|")) {
          return Error(line, "unsupported construct: filtered block set");
        }
        s->kind = Stmt::Kind::kSetBlock;
        DUET_RETURN_IF_ERROR(ExpectBlockEnd());
        DUET_RETURN_IF_ERROR(ParseBody({"endset"}, &s->body, &end));
      }
    } else if (name == "macro") {
      s->kind = Stmt::Kind::kMacro;
      if (Cur().kind != K::kName) return Error(line, "expected macro name");
      s->text = Cur().value;
      ++pos_;
      DUET_RETURN_IF_ERROR(Expect("("));
      while (!IsOp(")")) {
        if (!s->params.empty()) DUET_RETURN_IF_ERROR(Expect(","));
        if (IsOp(")")) break;
        if (Cur().kind != K::kName) {
          return Error(Cur().line, "expected a macro parameter name");
        }
        std::string param = Cur().value;
        ++pos_;
        ExprPtr def;
        if (SkipOp("=")) {
          DUET_ASSIGN_OR_RETURN(def, ParseExpression(true));
        }
        s->params.emplace_back(param, std::move(def));
      }
      ++pos_;
      macros_.insert(s->text);
      DUET_RETURN_IF_ERROR(ExpectBlockEnd());
      DUET_RETURN_IF_ERROR(ParseBody({"endmacro"}, &s->body, &end));
    } else if (name == "break" || name == "continue") {
      s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      if (loop_depth_ == 0) {
        return Error(line, absl::StrCat("'", name, "' outside a for loop"));
      }
    } else if (name == "generation") {
      s->kind = Stmt::Kind::kGeneration;
      DUET_RETURN_IF_ERROR(ExpectBlockEnd());
      DUET_RETURN_IF_ERROR(ParseBody({"endgeneration"}, &s->body, &end));
    } else {
      return Error(line, absl::StrCat("unsupported tag '", name, "'"));
    }
    if (name == "for") --loop_depth_;
    DUET_RETURN_IF_ERROR(ExpectBlockEnd());
    body->push_back(std::move(s));
    return absl::OkStatus();
  }

  // Assignment targets: `a`, `a, b`, `(a, b)`, or (set only) `ns.attr`.
  absl::Status ParseTargets(std::vector<std::string>* names,
                            std::string* attr) {
    bool paren = SkipOp("(");
    while (true) {
      if (Cur().kind != K::kName) {
        return Error(Cur().line,
                     absl::StrCat("can't assign to ", Describe(Cur())));
      }
      names->push_back(Cur().value);
      ++pos_;
      if (attr != nullptr && names->size() == 1 && SkipOp(".")) {
        if (Cur().kind != K::kName) {
          return Error(Cur().line, "expected attribute name");
        }
        *attr = Cur().value;
        ++pos_;
        break;
      }
      if (!SkipOp(",")) break;
    }
    if (paren) DUET_RETURN_IF_ERROR(Expect(")"));
    // The body of a for loop is parsed right after its targets.
    if (attr == nullptr) ++loop_depth_;
    return absl::OkStatus();
  }

  // Comma-separated expressions: one is itself, several a tuple.
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr) {
    int line = Cur().line;
    DUET_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(with_condexpr));
    if (!IsOp(",")) return first;
    ExprPtr tuple = MakeExpr(Expr::Kind::kTuple, line);
    tuple->children.push_back(std::move(first));
    while (SkipOp(",")) {
      if (Cur().kind == K::kBlockEnd || Cur().kind == K::kVarEnd || IsOp(")")) {
        break;
      }
      DUET_ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(with_condexpr));
      tuple->children.push_back(std::move(e));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    if (!with_condexpr) return ParseOr();
    DUET_ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (IsName("if")) {
      int line = Cur().line;
      ++pos_;
      ExprPtr cond_expr = MakeExpr(Expr::Kind::kCondExpr, line);
      DUET_ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      ExprPtr other;
      if (SkipName("else")) {
        DUET_ASSIGN_OR_RETURN(other, ParseExpression(true));
      }
      cond_expr->children.push_back(std::move(expr));
      cond_expr->children.push_back(std::move(cond));
      cond_expr->children.push_back(std::move(other));
      expr = std::move(cond_expr);
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> Binary(Expr::Kind kind, std::string op, ExprPtr l,
                                 ExprPtr r, int line) {
    ExprPtr e = MakeExpr(kind, line);
    e->name = std::move(op);
    e->children.push_back(std::move(l));
    e->children.push_back(std::move(r));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    DUET_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      int line = Cur().line;
      ++pos_;
      DUET_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      DUET_ASSIGN_OR_RETURN(left, Binary(Expr::Kind::kOr, "or", std::move(left),
                                         std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    DUET_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      int line = Cur().line;
      ++pos_;
      DUET_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      DUET_ASSIGN_OR_RETURN(left,
                            Binary(Expr::Kind::kAnd, "and", std::move(left),
                                   std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      ExprPtr e = MakeExpr(Expr::Kind::kNot, Cur().line);
      ++pos_;
      DUET_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      e->children.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    int line = Cur().line;
    DUET_ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (Cur().kind == K::kOp &&
          (Cur().value == "==" || Cur().value == "!=" || Cur().value == "<" ||
           Cur().value == "<=" || Cur().value == ">" || Cur().value == ">=")) {
        op = Cur().value;
        ++pos_;
      } else if (IsName("in")) {
        op = "in";
        ++pos_;
      } else if (IsName("not") && Peek().kind == K::kName &&
                 Peek().value == "in") {
        op = "notin";
        pos_ += 2;
      } else {
        break;
      }
      if (!cmp) {
        cmp = MakeExpr(Expr::Kind::kCompare, line);
        cmp->children.push_back(std::move(first));
      }
      DUET_ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      cmp->ops.push_back(op);
      cmp->children.push_back(std::move(right));
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    DUET_ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      std::string op = Cur().value;
      int line = Cur().line;
      ++pos_;
      DUET_ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      DUET_ASSIGN_OR_RETURN(left,
                            Binary(Expr::Kind::kBinary, op, std::move(left),
                                   std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    DUET_ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      int line = Cur().line;
      ++pos_;
      DUET_ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      DUET_ASSIGN_OR_RETURN(left,
                            Binary(Expr::Kind::kBinary, "~", std::move(left),
                                   std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    DUET_ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = Cur().value;
      int line = Cur().line;
      ++pos_;
      DUET_ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      DUET_ASSIGN_OR_RETURN(left,
                            Binary(Expr::Kind::kBinary, op, std::move(left),
                                   std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    DUET_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      int line = Cur().line;
      ++pos_;
      DUET_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      DUET_ASSIGN_OR_RETURN(left,
                            Binary(Expr::Kind::kBinary, "**", std::move(left),
                                   std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node =
          MakeExpr(IsOp("-") ? Expr::Kind::kNeg : Expr::Kind::kPos, Cur().line);
      ++pos_;
      DUET_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      node->children.push_back(std::move(operand));
    } else {
      DUET_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    DUET_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      DUET_ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& tok = Cur();
    int line = tok.line;
    if (tok.kind == K::kName) {
      ++pos_;
      const std::string& v = tok.value;
      ExprPtr e = MakeExpr(Expr::Kind::kLiteral, line);
      if (v == "true" || v == "True") {
        e->literal = Value(true);
      } else if (v == "false" || v == "False") {
        e->literal = Value(false);
      } else if (v == "none" || v == "None") {
        e->literal = Value::None();
      } else {
        e->kind = Expr::Kind::kName;
        e->name = v;
      }
      return e;
    }
    if (tok.kind == K::kString) {
      std::string s;
      while (Cur().kind == K::kString) s += t_[pos_++].value;
      ExprPtr e = MakeExpr(Expr::Kind::kLiteral, line);
      e->literal = Value(std::move(s));
      return e;
    }
    if (tok.kind == K::kInt || tok.kind == K::kFloat) {
      ++pos_;
      ExprPtr e = MakeExpr(Expr::Kind::kLiteral, line);
      if (tok.kind == K::kInt) {
        errno = 0;
        long long v = std::strtoll(tok.value.c_str(), nullptr, 10);
        if (errno == ERANGE) return Error(line, "integer literal too large");
        e->literal = Value(static_cast<int64_t>(v));
      } else {
        e->literal = Value(std::strtod(tok.value.c_str(), nullptr));
      }
      return e;
    }
    if (SkipOp("(")) {
      if (SkipOp(")")) return MakeExpr(Expr::Kind::kTuple, line);
      DUET_ASSIGN_OR_RETURN(ExprPtr e, ParseTuple(true));
      DUET_RETURN_IF_ERROR(Expect(")"));
      return e;
    }
    if (SkipOp("[")) {
      ExprPtr e = MakeExpr(Expr::Kind::kList, line);
      while (!IsOp("]")) {
        if (!e->children.empty()) DUET_RETURN_IF_ERROR(Expect(","));
        if (IsOp("]")) break;
        DUET_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
        e->children.push_back(std::move(item));
      }
      ++pos_;
      return e;
    }
    if (SkipOp("{")) {
      ExprPtr e = MakeExpr(Expr::Kind::kDict, line);
      while (!IsOp("}")) {
        if (!e->children.empty()) DUET_RETURN_IF_ERROR(Expect(","));
        if (IsOp("}")) break;
        DUET_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
        DUET_RETURN_IF_ERROR(Expect(":"));
        DUET_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        e->children.push_back(std::move(key));
        e->children.push_back(std::move(value));
      }
      ++pos_;
      return e;
    }
    return Error(line, absl::StrCat("unexpected ", Describe(tok)));
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      int line = Cur().line;
      if (SkipOp(".")) {
        if (Cur().kind == K::kName) {
          ExprPtr e = MakeExpr(Expr::Kind::kGetAttr, line);
          e->name = Cur().value;
          ++pos_;
          e->children.push_back(std::move(node));
          node = std::move(e);
        } else if (Cur().kind == K::kInt) {
          ExprPtr e = MakeExpr(Expr::Kind::kGetItem, line);
          ExprPtr idx = MakeExpr(Expr::Kind::kLiteral, line);
          idx->literal = Value(static_cast<int64_t>(std::stoll(Cur().value)));
          ++pos_;
          e->children.push_back(std::move(node));
          e->children.push_back(std::move(idx));
          node = std::move(e);
        } else {
          return Error(line, "expected attribute name after '.'");
        }
      } else if (SkipOp("[")) {
        DUET_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node), line));
      } else if (IsOp("(")) {
        DUET_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr obj, int line) {
    ExprPtr parts[3];
    bool is_slice = false;
    for (int i = 0; i < 3; ++i) {
      if (!IsOp(":") && !IsOp("]")) {
        DUET_ASSIGN_OR_RETURN(parts[i], ParseExpression(true));
      }
      if (i < 2 && SkipOp(":")) {
        is_slice = true;
        continue;
      }
      break;
    }
    DUET_RETURN_IF_ERROR(Expect("]"));
    ExprPtr e =
        MakeExpr(is_slice ? Expr::Kind::kSlice : Expr::Kind::kGetItem, line);
    e->children.push_back(std::move(obj));
    if (!is_slice && !parts[0]) return Error(line, "empty subscript");
    e->children.push_back(std::move(parts[0]));
    if (is_slice) {
      e->children.push_back(std::move(parts[1]));
      e->children.push_back(std::move(parts[2]));
    }
    return e;
  }

  // `(args)` into e->children (after what is already there) and e->kwargs.
  absl::Status ParseArgs(Expr* e) {
    DUET_RETURN_IF_ERROR(Expect("("));
    bool first = true;
    while (!IsOp(")")) {
      if (!first) DUET_RETURN_IF_ERROR(Expect(","));
      first = false;
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) {
        return Error(Cur().line, "unsupported construct: *args/**kwargs");
      }
      if (Cur().kind == K::kName && Peek().kind == K::kOp &&
          Peek().value == "=") {
        std::string key = Cur().value;
        pos_ += 2;
        DUET_ASSIGN_OR_RETURN(ExprPtr v, ParseExpression(true));
        e->kwargs.emplace_back(key, std::move(v));
      } else {
        if (!e->kwargs.empty()) {
          return Error(Cur().line, "positional argument after keyword");
        }
        DUET_ASSIGN_OR_RETURN(ExprPtr v, ParseExpression(true));
        e->children.push_back(std::move(v));
      }
    }
    ++pos_;
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    ExprPtr e = MakeExpr(Expr::Kind::kCall, Cur().line);
    if (callee->kind == Expr::Kind::kGetAttr && !HasMethod(callee->name)) {
      return Error(callee->line,
                   absl::StrCat("unknown method '", callee->name, "'"));
    }
    if (callee->kind == Expr::Kind::kName) {
      calls_.emplace_back(callee->name, callee->line);
    }
    e->children.push_back(std::move(callee));
    DUET_RETURN_IF_ERROR(ParseArgs(e.get()));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        ++pos_;
        if (Cur().kind != K::kName) {
          return Error(Cur().line, "expected filter name after '|'");
        }
        ExprPtr e = MakeExpr(Expr::Kind::kFilter, Cur().line);
        e->name = Cur().value;
        ++pos_;
        if (!HasFilter(e->name)) {
          return Error(e->line, absl::StrCat("unknown filter '", e->name, "'"));
        }
        e->children.push_back(std::move(node));
        if (IsOp("(")) DUET_RETURN_IF_ERROR(ParseArgs(e.get()));
        node = std::move(e);
      } else if (IsName("is")) {
        ++pos_;
        ExprPtr e = MakeExpr(Expr::Kind::kTest, Cur().line);
        e->negated = SkipName("not");
        if (Cur().kind != K::kName) {
          return Error(Cur().line, "expected test name after 'is'");
        }
        e->name = Cur().value;
        ++pos_;
        if (!HasTest(e->name)) {
          return Error(e->line, absl::StrCat("unknown test '", e->name, "'"));
        }
        e->children.push_back(std::move(node));
        if (IsOp("(")) {
          DUET_RETURN_IF_ERROR(ParseArgs(e.get()));
        } else if ((Cur().kind == K::kName || Cur().kind == K::kString ||
                    Cur().kind == K::kInt || Cur().kind == K::kFloat ||
                    IsOp("[") || IsOp("{")) &&
                   !IsName("else") && !IsName("or") && !IsName("and")) {
          DUET_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
          DUET_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
          e->children.push_back(std::move(arg));
        }
        node = std::move(e);
      } else if (IsOp("(")) {
        DUET_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  // Calls of bare names must reach a global function or a macro the
  // template defines (macros may be defined after the call site).
  absl::Status CheckCalls(const Body&) {
    for (const auto& [name, line] : calls_) {
      if (!HasGlobal(name) && !macros_.contains(name)) {
        return Error(line, absl::StrCat("unknown function '", name, "'"));
      }
    }
    return absl::OkStatus();
  }

  const std::vector<Token>& t_;
  size_t pos_ = 0;
  int loop_depth_ = 0;
  absl::flat_hash_set<std::string> macros_;
  std::vector<std::pair<std::string, int>> calls_;
};

}  // namespace

absl::StatusOr<Body> Parse(const std::vector<Token>& tokens) {
  return Parser(tokens).Run();
}

}  // namespace duet::chat::jinja
